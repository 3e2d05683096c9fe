"""The run store: where training writes its runs and every reader finds them.

    RUNS/<experiment>/<run-id>/
      config.json     ConfigRecord   resolved config, code and library versions
      metrics.jsonl   EpochRecord    one line per epoch
      summary.json    SummaryRecord  written once when the run ends
      checkpoints/                   torch state dicts (read by training only)

One torch-free, grpc-free package, used by training (pipeline), the analysis
service and the command line alike: locations (`StoreLocation`, a local folder or an
object store URI), files (`open_files`: atomic writes, whole-line appends), names,
typed records, one run's folder (`RunDir`), a whole store (`RunStore`) and one
follower of a running run (`Follower`). docs/formats.md describes the format.
"""

from runstore.errors import (
    BadName,
    ExperimentNotFound,
    MalformedRun,
    ReaderBusy,
    RunNotFound,
    RunTooLarge,
)
from runstore.files import Files, open_files
from runstore.follow import Event, Follower, follow
from runstore.location import StoreLocation, redact
from runstore.names import (
    check_name,
    check_read_name,
    new_run_id,
    utc_now,
    value_name,
    values_label,
)
from runstore.outcomes import DIVERGED_MARK, OUTCOMES, RESULTS, diverged, failure, outcome
from runstore.reader import Run, RunStore, Scan, Skipped, format_value
from runstore.records import (
    FAILURES,
    SCHEMA_VERSION,
    STATUSES,
    ConfigRecord,
    EpochRecord,
    SummaryRecord,
    parse_epoch,
    parse_metrics,
    parse_summary,
)
from runstore.rundir import CHECKPOINTS, RunDir

__all__ = [
    "CHECKPOINTS",
    "DIVERGED_MARK",
    "FAILURES",
    "OUTCOMES",
    "RESULTS",
    "SCHEMA_VERSION",
    "STATUSES",
    "BadName",
    "ConfigRecord",
    "EpochRecord",
    "Event",
    "ExperimentNotFound",
    "Files",
    "Follower",
    "MalformedRun",
    "ReaderBusy",
    "Run",
    "RunDir",
    "RunNotFound",
    "RunStore",
    "RunTooLarge",
    "Scan",
    "Skipped",
    "StoreLocation",
    "SummaryRecord",
    "check_name",
    "check_read_name",
    "diverged",
    "failure",
    "follow",
    "format_value",
    "new_run_id",
    "open_files",
    "outcome",
    "parse_epoch",
    "parse_metrics",
    "parse_summary",
    "redact",
    "utc_now",
    "value_name",
    "values_label",
]
