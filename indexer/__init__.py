"""Turn folders of mixed media into Qdrant points in the bridged space (incremental, resumable)."""
