"""The test suite: a package, so shared helpers import by full name (`tests.train.train_support`)."""
