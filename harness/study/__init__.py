"""Study files: YAML -> preset merged -> frozen, validated schema -> the list of trials (the format: schema.py).

Every error names the file and the dotted key and suggests near matches.
"""

from harness.study.expand import TrialSpec, expand_trials, keyed_dump, trial_from_params  # noqa: I001 - the re-exports first
from harness.study.load import LoadedStudy, as_loaded, load_study, parse_study, read_yaml
from harness.study.resolve import resolve_trial, validate_study
from harness.study.schema import Study, TrialConfig, format_validation_error

# the schema's sections and limits stay importable from here, as before the split (not in __all__)
from harness.study.load import MAX_STUDY_BYTES, MAX_YAML_NODES  # noqa: F401
from harness.study.schema import (BackboneConfig, ConditioningConfig, Constraint, DatasetConfig,  # noqa: F401
                                  EvalConfig, InterpolantConfig, MixerConfig, Objective, SamplerConfig, ScanConfig,
                                  Search, SearchParam, TrainConfig, MAX_LIST, MAX_NAME, MAX_SEED, MAX_TRIALS)

__all__ = [
    "LoadedStudy", "Study", "TrialConfig", "TrialSpec", "as_loaded", "expand_trials", "format_validation_error",
    "keyed_dump", "load_study", "parse_study", "read_yaml", "resolve_trial", "trial_from_params", "validate_study",
]
