"""Private helpers of the dataset plugin: loaders for real, procedural and user-supplied data."""
