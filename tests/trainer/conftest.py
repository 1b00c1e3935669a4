import pytest


@pytest.fixture(scope="session")
def grpo_snapshot(tmp_path_factory):
    """A real Gen-Data snapshot per VLM family: a tiny student and a bigger, differently seeded
    teacher sharing its tokenizer; one iteration (masked teacher at 0.2, 3 + 3 responses for 8
    questions) generated, scored, judged and rewarded into a catalog, then snapshotted.
    Returns family -> (student folder, teacher folder, snapshot folder)."""
    from catalog import Catalog
    from catalog.snapshots import create_snapshot
    from gendata.backends import SamplingConfig
    from gendata.synthetic_vqa import synthetic_vqa
    from gendata.tiny_vlm import FAMILIES, TinySize, build_tiny_vlm, train_tokenizer
    from masters.gendata_iteration import IterationSpec, produce_iteration
    from masters.questions import ingest_questions
    from rewards.judges import make_judge
    from schemas.config import RewardConfig

    made = {}

    def make(family: str):
        if family in made:
            return made[family]
        root = tmp_path_factory.mktemp(f"grpo-{family}")
        qs = synthetic_vqa(60, "train")
        texts = [q["question"] + " " + q["answer"] for q in qs.questions.to_pylist()]
        fam = FAMILIES[family]
        tok = train_tokenizer(texts, fam.special_tokens, 400, fam.image_placeholder)
        student = build_tiny_vlm(family, TinySize(64, 2, 4, 2, 32, 2, 2), tok, root / "student", seed=0)
        teacher = build_tiny_vlm(family, TinySize(96, 2, 4, 2, 32, 2, 2), tok, root / "teacher", seed=1)
        cat = Catalog.open(root / "cat")
        ingest_questions(cat, synthetic_vqa(8, "train", seed=5), "questions")
        judge = make_judge("rule")
        reward = RewardConfig(judge_id=judge.judge_id)
        spec = IterationSpec(run_id="grpo-test", iteration=0, teacher=str(teacher), student=str(student),
                             mask_ratio=0.2, teacher_responses=3, student_responses=3,
                             sampling=SamplingConfig(max_new_tokens=10))
        produce_iteration(cat, spec, judge, reward, progress=False)
        snap = create_snapshot(cat, "iter0", reward.id, progress=False)
        cat.close()
        made[family] = (student, teacher, snap.path)
        return made[family]

    return make
