package client

// InClusterFrom is InCluster with the service account mounted at dir.
var InClusterFrom = inCluster
