"""Running compiled pipelines: model clients, retrieval, the executor, the run store."""
