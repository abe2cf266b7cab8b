"""The peer study: the toolkit's paths and their peers timed side by side (peers, roofline, report)."""
