"""Jobs over whole data sets, built on the inference core: ``score`` (RMScore), and the part files
that let several processes share one (``shards``)."""
