"""lmbuild: LLM pretraining as one declarative, content-addressed Snakemake build.

Each stage of the chain (raw -> cleaned -> deduplicated -> tokenizer -> shards ->
init_checkpoint -> trained_checkpoint -> eval_report) is a function
``build(ctx: StageContext) -> dict`` in a module of this package; ``lmbuild.plan``
says which module builds which stage and computes every artifact's address.
"""

__version__ = "0.1.0"
