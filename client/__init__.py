"""What a hospital runs: MIMIC loaders, cohort, feature cache, local training and the Flower ClientApp."""
