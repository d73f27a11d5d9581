"""lmbuild: LLM pretraining as one declarative, content-addressed Snakemake build.

Each stage of the chain (raw -> cleaned -> deduplicated -> tokenizer -> shards ->
init_checkpoint -> trained_checkpoint -> eval_report) is a function
``build(ctx: StageContext) -> dict`` in a module of this package; ``lmbuild.build.graph``
says which module builds which stage and computes every artifact's address.
"""

import os

__version__ = "0.1.0"

# The one place the hub defaults are set: every job, test and benchmark imports this package
# before transformers/datasets/huggingface_hub, which read these at import. Offline, a hub name
# fails at once instead of retrying for a minute; users with the hub set them to 0.
HUB_OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
for _var, _val in HUB_OFFLINE.items():
    os.environ.setdefault(_var, _val)
