"""Find the parts of an archive, read its split files and the community split lists, verify it."""
