"""One federated round at a site: local training, prediction, aggregate metrics."""
