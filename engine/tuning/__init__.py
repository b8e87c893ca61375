"""`manymodels tune`: a cluster-wide hyperparameter search (SparkTrials) over a sample of entities, and its
table. It builds on training (engine.training.backtest, engine.training.search); training never imports it."""
