"""kp: a kube-proxy data plane on OpenFlow 1.3."""
