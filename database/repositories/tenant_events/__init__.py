"""Events told to tenants: the rows the effects write, the sequencer, the feed."""
