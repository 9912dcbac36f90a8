"""Finding the parts of an archive: folders, zips and their central directories, split files."""
