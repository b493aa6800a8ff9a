"""Dataset definition files (YAML): official URLs, expected row counts and hashes. Data only."""
