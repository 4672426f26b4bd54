"""Tools around training: the step benchmark (tools/benchmark) and multi-run studies (tools/study)."""
