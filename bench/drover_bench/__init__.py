"""drover benchmark harness (issue 6): clusters, peers, workloads, report."""
