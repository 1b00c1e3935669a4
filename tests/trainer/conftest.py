import pytest


@pytest.fixture(scope="session")
def grpo_snapshot(tmp_path_factory, tiny_pair):
    """A real Gen-Data snapshot per VLM family: a tiny student and a bigger, differently seeded
    teacher sharing its tokenizer; one iteration (masked teacher at 0.2, 3 + 3 responses for 8
    questions) generated, scored, judged and rewarded into a catalog, then snapshotted.
    Returns family -> (student folder, teacher folder, snapshot folder)."""
    from catalog import Catalog
    from catalog.snapshots import create_snapshot
    from gendata.backends import SamplingConfig
    from gendata.synthetic_vqa import synthetic_vqa
    from masters.production import produce_iteration
    from masters.stages import IterationScope, IterationSpec
    from masters.questions import ingest_questions
    from rewards.judges import make_judge
    from schemas.config import RewardConfig

    made = {}

    def make(family: str):
        if family in made:
            return made[family]
        root = tmp_path_factory.mktemp(f"grpo-{family}")
        student, teacher = tiny_pair(family)
        cat = Catalog.open(root / "cat")
        ingest_questions(cat, synthetic_vqa(8, "train", seed=5), "questions")
        judge = make_judge("rule")
        reward = RewardConfig(judge_id=judge.judge_id)
        spec = IterationSpec(run_id="grpo-test", iteration=0, teacher=str(teacher), student=str(student),
                             mask_ratio=0.2, teacher_responses=3, student_responses=3,
                             sampling=SamplingConfig(max_new_tokens=10))
        produce_iteration(cat, IterationScope.build(spec, judge, reward), progress=False)
        # every GRPO test trains on summaries in the encoding the scorer writes (fx/2)
        assert cat.sql("SELECT DISTINCT encoding FROM token_stats").column(0).to_pylist() == ["fx/2"]
        snap = create_snapshot(cat, "iter0", reward.id, progress=False)
        cat.close()
        made[family] = (student, teacher, snap.path)
        return made[family]

    return make
