"""Repository backends: where node files live, addressed by the sha256 of their content."""
