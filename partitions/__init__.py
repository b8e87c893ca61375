"""How entities are grouped into tasks: cost model, bin-packing and the Spark partition plan.

Built by the training issue on top of gold.series (entity keys, rows per entity).
"""
