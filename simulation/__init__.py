"""What only a simulation needs: synthetic MIMIC, virtual sites and experiment drivers."""
