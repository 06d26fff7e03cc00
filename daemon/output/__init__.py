"""Output: the JSON report and the static HTML review gallery."""
