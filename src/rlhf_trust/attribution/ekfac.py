"""EK-FAC influence through kronfluence (`influence.method: ekfac`): the library does the work.

kronfluence wraps every tracked Linear (here: the selected LoRA A / B matrices) and fits, over the
model's own passes on the train pairs, Kronecker factors of each module's (empirical) Fisher, their
eigenbases and EK-FAC's corrected eigenvalues; then it scores (test x train) pairs with per-example
train gradients preconditioned by that inverse. Our per-example losses are the task's losses, so the
quantity is the same as `exact`'s, with the Gauss-Newton block per LoRA tensor replaced by EK-FAC.

Two adaptations (found on the tiny GPT-NeoX; docs/influence.md):
- our losses run one-time consistency checks with no-grad forwards (packing, fused head); under
  kronfluence's hooks a no-grad forward fails ("cannot register a hook on a tensor that doesn't require
  gradient"), so they run once before `prepare_model`;
- accelerate's `find_batch_size` needs a tensor in the batch: the collate function adds one.

Cost: factor fitting is 2 passes over the train pairs (covariances, then eigenvalue correction) and
scoring a third (per-example gradients), each a forward + backward, beside our gradient store. The
stage's model is deep-copied first: kronfluence replaces the tracked modules in place.
Sign: kronfluence scores g_test^T (F + lambda)^-1 g_train (positive = helpful); ours is minus that.
Damping: kronfluence's heuristic, 0.1 x the mean eigenvalue per module, i.e. `damping_scale` 0.1.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def ekfac_scores(model, tok, train_kind: str, test_kind: str, train_rows: list[dict], test_rows: list[dict],
                 layers: list[str], max_length: int, *, ref_model=None, beta: float = 0.1, device: str = "cpu",
                 batch_size: int = 8, workdir: str | Path | None = None):
    """(n_train, n_test) EK-FAC scores, up-weighting sign (positive = raises the test loss)."""
    import copy

    import torch

    from rlhf_trust.errors import UserError

    try:
        import kronfluence  # noqa: F401  (installed --no-deps by `make setup`: requirements-nodeps.txt)
    except ImportError:
        raise UserError("influence.method ekfac needs kronfluence: run `make setup` (it installs "
                        "requirements-nodeps.txt with --no-deps)") from None
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from kronfluence.utils.dataset import DataLoaderKwargs

    from rlhf_trust.attribution import losses

    def loss(kind, m, rows):
        return losses.per_example_losses(kind, m, tok, rows, max_length, ref_model=ref_model, beta=beta,
                                         device=device)[0].sum()

    modules = [n[: -len(".weight")] for n in layers]

    class _Task(Task):
        def compute_train_loss(self, batch, model, sample=False):  # empirical Fisher (use_empirical_fisher)
            return loss(train_kind, model, batch["rows"])

        def compute_measurement(self, batch, model):
            return loss(test_kind, model, batch["rows"])

        def get_influence_tracked_modules(self):
            return modules

    class _Rows(torch.utils.data.Dataset):
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    work = copy.deepcopy(model)
    with torch.no_grad():  # the losses' one-time checks, before the hooks exist
        loss(train_kind, work, train_rows[:2])
        loss(test_kind, work, test_rows[:2])
    task = _Task()
    work = prepare_model(work, task)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        an = Analyzer(analysis_name="ekfac", model=work, task=task, cpu=device == "cpu", output_dir=tmp,
                      disable_tqdm=False)
        an.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=lambda b: {"n": torch.zeros(len(b)), "rows": b}))
        an.fit_all_factors(factors_name="ekfac", dataset=_Rows(train_rows), per_device_batch_size=batch_size,
                           factor_args=FactorArguments(strategy="ekfac", use_empirical_fisher=True),
                           overwrite_output_dir=True)
        an.compute_pairwise_scores(scores_name="scores", factors_name="ekfac", query_dataset=_Rows(test_rows),
                                   train_dataset=_Rows(train_rows), per_device_query_batch_size=batch_size,
                                   per_device_train_batch_size=batch_size, overwrite_output_dir=True,
                                   score_args=ScoreArguments(damping_factor=None))
        s = an.load_pairwise_scores("scores")["all_modules"]  # (T, n)
    return (-s.T.double()).float()
