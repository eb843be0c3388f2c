"""Running OmniHub: the local runner behind `make run` and, later, the
container image and cluster manifests."""
