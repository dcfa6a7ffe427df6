"""Reports: figures drawn with matplotlib (written atomically) and the comparison report."""
