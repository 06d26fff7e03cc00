"""Scale-out of the bulk embed (Ray). Importing this package imports nothing heavy; its modules do."""
