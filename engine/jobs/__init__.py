"""Jobs: a batch of photos with its options, events, report and manifest; the CLI and the desktop drive it."""
