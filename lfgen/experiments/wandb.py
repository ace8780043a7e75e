"""``lfgen sweep --export wandb``: the same values as a W&B sweep over ``llamafactory-cli``."""

from __future__ import annotations

from typing import Any

from lfgen.builder.context import Build
from lfgen.builder.render import render
from lfgen.errors import InputError


def wandb_files(name: str, sweep: dict[str, Any], experiments_dir: str, outputs_dir: str, base_build: Build,
                 built: list) -> dict[str, str]:
    """A W&B sweep over the same values: `wandb sweep experiments/<name>/wandb-sweep.yaml`.

    LlamaFactory takes ``key=value`` overrides after the YAML (``--key value`` fails there), which is
    what W&B's ``${args_no_hyphens}`` macro produces.
    """
    import yaml

    from lfgen.runs.ranking import varying_keys

    base_config = dict(base_build.config)
    base_config.update(report_to="wandb", output_dir=f"{outputs_dir}/{name}/wandb", overwrite_output_dir=True)
    parameters: dict[str, Any] = {}
    if sweep["axis"] == "random":
        for key, spec in sweep["space"].items():
            if "choices" in spec:
                parameters[key] = {"values": spec["choices"]}
            elif spec.get("type") == "int":
                parameters[key] = {"distribution": "int_uniform", "min": spec["low"], "max": spec["high"]}
            else:
                parameters[key] = {"distribution": "log_uniform_values" if spec.get("log") else "uniform",
                                   "min": spec["low"], "max": spec["high"]}
    else:
        configs = [result.config for _, result in built]
        for key in varying_keys(configs, base=base_build.config):
            parameters[key] = {"values": list(dict.fromkeys(c.get(key) for c in configs))}
    if "lora_rank" in parameters and "lora_alpha" in parameters:
        # A sweep can't tie two parameters; LlamaFactory's own default lora_alpha is 2 x rank, R-ALPHA's ratio.
        ratios = {r.config["lora_alpha"] / r.config["lora_rank"] for _, r in built}
        if ratios != {2.0}:
            raise InputError("--export wandb: alpha moves with rank at a ratio other than 2, which a W&B sweep "
                             "cannot express; sweep rank on a base with alpha = 2 x rank")
        del parameters["lora_alpha"]
        base_config.pop("lora_alpha", None)
    if "lora_rank" in parameters and "learning_rate" in parameters and sweep["axis"] == "rank":
        raise InputError("--export wandb: learning_rate moves with the rank (R-LR-RANK keeps lr x alpha where it was "
                         "measured best), which a W&B grid cannot tie to it; hold the rate with --lr VALUE")
    base_rel = f"{experiments_dir}/{name}/wandb-base.yaml"
    spec = {
        "program": "llamafactory-cli",
        "method": "random" if sweep["axis"] == "random" else "grid",
        "metric": {"name": "eval/loss", "goal": "minimize"},
        "parameters": parameters,
        "command": ["llamafactory-cli", "train", base_rel, "${args_no_hyphens}"],
    }
    header = (f"# W&B sweep of experiment {name} (run from the project root):\n"
              f"#   wandb sweep {experiments_dir}/{name}/wandb-sweep.yaml && wandb agent <sweep id>\n"
              "# One agent at a time: every run trains in the same output_dir (overwrite_output_dir: true).\n")
    return {"wandb-sweep.yaml": header + yaml.safe_dump(spec, sort_keys=False),
            "wandb-base.yaml": render(base_config, header=[f"Base config of the W&B sweep {name}"])}
