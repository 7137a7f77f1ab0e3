"""Hierarchical corpus: figure, panel and patch image-text pairs, filtered, deduplicated, split by
article and written as WebDataset shards with a manifest and an HTML QC report."""
