"""The watching service: the daemon loop, its status file, systemd notify, mounts, dirty paths and watchers."""
