"""The data-parallel judge's split (schedule.py) against brute force, its answers in the caller's
order, and the judging figures a run writes (judge_stats.json)."""
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from psdistill.core.errors import PsdistillError
from psdistill.data.records import ImageRecord
from psdistill.judge.parallel import DataParallelJudge, run_stats
from psdistill.judge.schedule import cap_groups, prefix_keys, shard
from psdistill.judge.simulated import SimulatedJudge, SimulatedJudgeConfig


def _optimum(costs, groups, world):
    """The smallest largest shard over every assignment of whole groups to ranks."""
    ids = np.unique(groups)
    group_cost = [costs[groups == g].sum() for g in ids]
    return min(max(sum(c for c, r in zip(group_cost, assign) if r == rank) for rank in range(world))
               for assign in itertools.product(range(world), repeat=len(ids)))


@pytest.mark.parametrize("seed", range(40))
def test_shard_gives_every_pair_once_keeps_groups_whole_and_is_within_the_lpt_bound(seed):
    rng = np.random.default_rng(seed)
    n, world = int(rng.integers(1, 9)), int(rng.integers(1, 4))
    costs = rng.integers(1, 20, n).astype(float)
    groups = rng.integers(0, max(1, n // 2 + 1), n)
    shards = shard(costs, groups, world)
    assert len(shards) == world
    assert sorted(np.concatenate(shards).tolist()) == list(range(n))
    assert all(list(s) == sorted(s) for s in shards)
    owner = {i: r for r, s in enumerate(shards) for i in s}
    assert all(len({owner[i] for i in np.flatnonzero(groups == g)}) == 1 for g in np.unique(groups))
    largest = max(costs[s].sum() for s in shards)
    assert largest <= (4 / 3 - 1 / (3 * world)) * _optimum(costs, groups, world) + 1e-9


def test_shard_balances_what_the_strided_split_pins_to_one_rank():
    # Every other pair costly: a stride of 2 gives rank 0 all of them; by cost, both ranks get half.
    costs = np.array([10.0, 1.0] * 8)
    shards = shard(costs, np.arange(16), 2)
    assert [costs[s].sum() for s in shards] == [44.0, 44.0]
    assert costs[0::2].sum() == 80.0


def test_cap_groups_cuts_only_groups_larger_than_an_even_share_into_consecutive_pieces():
    costs = np.ones(10)
    groups = np.array([0] * 8 + [1, 1])  # group 0 holds 8 of 10 pairs: more than 10 / 2
    capped = cap_groups(costs, groups, 2)
    pieces = [np.flatnonzero(capped == g) for g in np.unique(capped)]
    assert sorted(len(p) for p in pieces) == [2, 3, 5]  # 8 -> 5 + 3, group 1 untouched
    assert all((np.diff(p) == 1).all() for p in pieces)  # consecutive
    assert all(len(set(groups[p])) == 1 for p in pieces)  # never across groups
    assert (cap_groups(costs, groups, 1) == groups).all()


def test_prefix_keys_groups_pairs_by_their_first_image():
    assert prefix_keys(["b", "a", "b", "c", "a"]).tolist() == [0, 1, 0, 2, 1]


class _Rank:
    """accelerate's PartialState for one rank of two."""

    def __init__(self, index):
        self.num_processes, self.process_index, self.is_main_process = 2, index, index == 0


class _Local(DataParallelJudge):
    """Both ranks in one process: the leader's transport hands rank 1 (a second DataParallelJudge with
    its own judge) its share and reads rank 1's messages as rank 1 makes them."""

    def __init__(self, judge, other_judge, chunk_size=None):
        super().__init__(judge, _Rank(0))
        self.other = DataParallelJudge(other_judge, _Rank(1))
        if chunk_size:
            self.chunk_size = self.other.chunk_size = chunk_size
        self.calls = 0

    def _scatter(self, messages):
        if messages[1][0] == "judge":
            self.calls += 1
            self._replies_of_1 = self.other._replies(*messages[1][1:])
        return messages[0]

    def _receive(self, rank):
        return next(self._replies_of_1)

    def _gather(self, item):
        return [item, self.other.judge.rank_stats(1, self.other._waiting)]


def _records(tmp_path, n=6):
    return [ImageRecord(id=str(i), path=str(tmp_path / f"{i}.png"), scores={"overall": float(i)}) for i in range(n)]


def test_answers_come_back_in_the_callers_order_and_the_figures_add_up(tmp_path):
    records = _records(tmp_path)
    pairs = [(records[i], records[j]) for i in range(6) for j in (0, 1) if i != j]
    sim = SimulatedJudge(SimulatedJudgeConfig(seed=3))
    judge = _Local(sim, SimulatedJudge(SimulatedJudgeConfig(seed=3)), chunk_size=2)
    with judge.leading():
        p = judge.prefer(pairs, "overall")
    np.testing.assert_array_equal(p, sim.prefer(pairs, "overall"))
    assert sum(judge.computed_per_rank) == len(pairs) and min(judge.computed_per_rank) > 0
    stats = judge.stats
    assert [r["pairs"] for r in stats["per_rank"]] == judge.computed_per_rank
    assert 0 <= stats["per_rank"][0]["busy_s"] <= stats["wall_s"] + 1e-3


def test_a_one_process_launch_needs_no_process_group(tmp_path):
    # One rank of one (a launch of 1, a benchmark's baseline): no torch.distributed group exists to speak through.
    from accelerate import PartialState

    records = _records(tmp_path)
    pairs = [(records[i], records[j]) for i in range(6) for j in (0, 1) if i != j]
    sim = SimulatedJudge(SimulatedJudgeConfig(seed=3))
    judge = DataParallelJudge(SimulatedJudge(SimulatedJudgeConfig(seed=3)), PartialState(cpu=True))
    assert judge.state.num_processes == 1
    with judge.leading():
        np.testing.assert_array_equal(judge.prefer(pairs, "overall"), sim.prefer(pairs, "overall"))
    assert judge.stats["pairs"] == len(pairs) and judge.computed_per_rank == [len(pairs)]


def test_the_store_gets_every_chunk_of_one_call_as_the_ranks_send_it(tmp_path):
    from psdistill.judge.cached import CachedJudge
    from psdistill.judge.store import JudgmentStore

    records = _records(tmp_path, 9)
    for r in records:
        Path(r.path).write_bytes(r.id.encode())
    pairs = [(records[i], records[j]) for i in range(9) for j in range(3) if i != j]
    sim = SimulatedJudge(SimulatedJudgeConfig(seed=1))
    judge = _Local(sim, SimulatedJudge(SimulatedJudgeConfig(seed=1)), chunk_size=3)
    store = JudgmentStore(tmp_path / "j.sqlite")
    puts = []
    store.put = lambda *a, put=store.put: puts.append(len(a[3])) or put(*a)
    with judge.leading():
        p = CachedJudge(judge, store, progress=False).prefer(pairs, "overall")
    np.testing.assert_array_equal(p, sim.prefer(pairs, "overall"))
    assert judge.calls == 1  # the whole call split once, not a round trip per chunk
    # one store write per chunk of each rank's share
    assert sum(puts) == len(pairs) and max(puts) == 3
    assert len(puts) == sum(-(-share // 3) for share in judge.computed_per_rank)


def test_a_rank_with_another_judge_stops_the_call_with_one_line(tmp_path):
    records = _records(tmp_path)
    pairs = [(records[i], records[0]) for i in range(1, 6)]
    judge = _Local(SimulatedJudge(SimulatedJudgeConfig(seed=0)), SimulatedJudge(SimulatedJudgeConfig(seed=1)))
    with pytest.raises(PsdistillError) as err:
        with judge.leading():
            judge.prefer(pairs, "overall")
    assert str(err.value).startswith("rank 1 judges with simulated(accuracy=0.85,position_bias=0.3,seed=1) (prompt -), "
                                     "the main process with simulated(accuracy=0.85,position_bias=0.3,seed=0)")
    assert "\n" not in str(err.value) and judge.other.judge.pairs == 0  # rank 1 judged nothing


def test_a_dead_rank_stops_the_leader_with_one_line_and_the_chunks_that_came_are_stored(tmp_path):
    from psdistill.judge.cached import CachedJudge
    from psdistill.judge.store import JudgmentStore

    records = _records(tmp_path, 8)
    for r in records:
        Path(r.path).write_bytes(r.id.encode())
    pairs = [(records[i], records[j]) for i in range(8) for j in range(3) if i != j]

    class Dies(_Local):  # rank 1 sends one chunk, then its connection closes (as gloo reports it)
        def _receive(self, rank):
            if getattr(self, "_sent", False):
                raise RuntimeError("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1. "
                                   "This is typically caused by a remote worker crashing.")
            self._sent = True
            return super()._receive(rank)

    sim = SimulatedJudge(SimulatedJudgeConfig())
    judge = Dies(sim, SimulatedJudge(SimulatedJudgeConfig()), chunk_size=2)
    store = JudgmentStore(tmp_path / "j.sqlite")
    with pytest.raises(PsdistillError) as err:
        with judge.leading():
            CachedJudge(judge, store, progress=False).prefer(pairs, "overall")
    assert str(err.value) == ("judging stopped: rank 1 stopped answering (Connection closed by peer [127.0.0.1]:1); "
                              "the store keeps every finished answer, rerun to judge the rest")
    stored = CachedJudge(sim, store, progress=False).lookup(pairs, "overall")
    done = np.isfinite(stored)
    assert done.sum() >= 2 and not done.all()  # rank 1's chunk and whatever the main process finished
    np.testing.assert_array_equal(stored[done], sim.prefer(pairs, "overall")[done])


def test_a_silent_rank_stops_the_leader_after_its_timeout(tmp_path):
    import time

    records = _records(tmp_path)
    pairs = [(records[i], records[0]) for i in range(1, 6)]

    class Silent(_Local):
        def _receive(self, rank):
            time.sleep(2)  # a rank that fell silent without closing its connection
            return "end", 1, None

    judge = Silent(SimulatedJudge(SimulatedJudgeConfig()), SimulatedJudge(SimulatedJudgeConfig()))
    judge.timeout_s = 0.3
    with pytest.raises(PsdistillError, match=r"^judging stopped: no answer from rank\(s\) \[1\] in 0.3 s"):
        with judge.leading():
            judge.prefer(pairs, "overall")


def test_run_stats_utilization_is_busy_over_ranks_times_wall():
    ranks = [{"rank": 0, "pairs": 30, "busy_s": 3.0}, {"rank": 1, "pairs": 10, "busy_s": 1.0}]
    stats = run_stats(ranks, 4.0)
    assert (stats["pairs"], stats["utilization"], stats["pairs_per_s"]) == (40, 0.5, 10.0)


def test_a_one_process_run_writes_judge_stats(tmp_path):
    from psdistill.core.config import parse_config
    from psdistill.pipeline import PipelineConfig, run_pipeline
    from psdistill.pipeline.console import print_report

    cfg = parse_config(PipelineConfig, [f"run_dir={tmp_path / 'run'}", "data.demo.series_per_category=3",
                                        "data.demo.size=32", "pool.k=5"])
    results = run_pipeline(cfg, stop_after="judge", log=lambda *a: None)
    summary = results["judge"]["summary"]
    stats = json.loads((tmp_path / "run" / "judge_stats.json").read_text())
    assert stats["ranks"] == 1 and stats["pairs"] == stats["per_rank"][0]["pairs"] == summary["computed"] > 0
    assert 0 < stats["per_rank"][0]["busy_s"] <= stats["wall_s"] and stats["per_rank"][0]["waiting_s"] == 0
    assert summary["judging"]["utilization"] == stats["utilization"] <= 1
    lines = []
    print_report(cfg, results, out=lines.append)
    assert stats["prefix_tokens_saved"] == stats["per_rank"][0]["prefix_tokens_saved"] == 0  # the simulated judge
    assert f"  judging: 1 rank, utilization {stats['utilization']:.2f}, {stats['pairs_per_s']:.1f} pairs/s " \
           "(judge_stats.json)" in lines  # no prefix figure for a judge that reuses none
    model = summary["dimensions"]["overall"]["judge_model"]  # the default plugin pool: the simulated judge is a step
    assert model["model"] == "step" and 0.5 < model["accuracy"] < 1
    assert f"  judge model: step, right {model['accuracy']:.0%} of the time however far apart" in lines


def test_pair_costs_count_the_image_tokens_the_processor_makes(tmp_path):
    from PIL import Image

    from psdistill.judge.parallel import pair_costs
    from psdistill.judge.schedule import PAIR_OVERHEAD_TOKENS
    from psdistill.models.tiny import tiny_qwen3_vl

    processor = tiny_qwen3_vl(seed=0, image_size=128)[1]
    records = []
    for i, size in enumerate([(64, 48), (200, 100), (30, 90)]):
        Image.new("RGB", size).save(tmp_path / f"{i}.png")
        records.append(ImageRecord(id=str(i), path=str(tmp_path / f"{i}.png"), scores={}))

    def tokens(record):  # what the processor makes of the decoded image
        grid = processor.image_processor(images=[Image.open(record.path).convert("RGB")],
                                         return_tensors="pt")["image_grid_thw"]
        return int(grid.prod()) // processor.image_processor.merge_size ** 2

    judge = type("Judge", (), {"processor": processor, "simulated": False})()
    pairs = [(records[0], records[1]), (records[2], records[0])]
    expected = [PAIR_OVERHEAD_TOKENS + tokens(a) + tokens(b) for a, b in pairs]
    assert len(set(expected)) == 2
    np.testing.assert_array_equal(pair_costs(judge, pairs), expected)
    assert pair_costs(SimulatedJudge(SimulatedJudgeConfig()), pairs).tolist() == [1.0, 1.0]


def test_psdistill_launch_names_a_rank_killed_by_a_signal_in_one_line():
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from psdistill.cli.launch import _killed

    def failed(exitcode):  # torch elastic's report of a rank that ended so; its root cause is the first
        return ChildFailedError("recipe.py", {1: ProcessFailure(local_rank=1, pid=11, exitcode=exitcode,
                                                                error_file="/nonexistent")})

    assert _killed(failed(-9)).startswith("rank 1 was killed by SIGKILL (out of memory, or stopped from outside)")
    assert _killed(failed(1)) is None  # a Python error: its traceback is the report


def test_judge_model_lines_keep_small_figures():
    """A tiny random VLM's answers vary by 1e-4 logit: the line keeps 3 significant digits, never divides by 0."""
    from psdistill.pipeline.console import describe_judge_model

    assert describe_judge_model({"model": "graded", "noise_sd": 0.000123, "spread_sd": 0.0000456}) == (
        "graded, answer logit = score gap + noise of sd 0.000123; scores spread with sd 4.56e-05 "
        "(signal to noise 0.371)")
    assert describe_judge_model({"model": "graded", "noise_sd": 0.0, "spread_sd": 0.1}).endswith("spread with sd 0.1")
    assert describe_judge_model({"model": "logistic", "dispersion": 0.25}) == "logistic, dispersion 0.25"
