"""RL loops that send images, unchanged on their side: TRL's GRPO calls ``rmkit.reward_function`` as its
``_calculate_rewards`` does (TRL 1.16: prompts whose user turn holds ``{"type": "image", "image": <PIL>}``
parts, completions as assistant messages, the data set's ``image`` column and the trainer's extras as keyword
arguments), in this process and through ``rmkit serve`` on loopback; the rewards equal offline scores."""

from __future__ import annotations

import pytest
from vision_models import picture, saved_rm

from rmkit.data.images import Picture
from rmkit.data.vision import VisionExample

QUESTIONS = ["What colour is the square?", "Name the colour you see."]
COMPLETIONS = ["It is red.", "Blue, I think, like the sky", "red", "A green square on grey"]


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    return saved_rm(tmp_path_factory, "qwen2_vl", seed=2)


def grpo_batch():
    """Two prompts, two generations each, as TRL hands them to a reward function."""
    images = [picture("red"), picture("blue", seed=1)]
    prompts, completions, column = [], [], []
    for k, completion in enumerate(COMPLETIONS):
        q = k // 2
        parts = [{"type": "image", "image": images[q]}, {"type": "text", "text": QUESTIONS[q]}]
        prompts.append([{"role": "user", "content": parts}])
        completions.append([{"role": "assistant", "content": completion}])
        column.append(images[q])
    return prompts, completions, column, images


def offline(rm, images) -> list[float]:
    out = []
    for k, completion in enumerate(COMPLETIONS):
        q = k // 2
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS[q]}]}]
        ex = VisionExample(0, prompt, [completion], False, images=[Picture(images[q], "")])
        out += rm.score_rows(rm.example_tokenizer().tokenize([ex])[0])
    return out


def trl_call(reward, prompts, completions, column):
    """The call of TRL 1.16's GRPOTrainer._calculate_rewards: the data set's other columns and its extras."""
    return reward(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1, 2]] * len(completions),
        image=column,
        trainer_state=None,
        log_extra=lambda *a, **k: None,
        log_metric=lambda *a, **k: None,
    )


def test_grpo_rewards_with_images_equal_offline_scores_in_process_and_over_http(vlm):
    import rmkit
    from rmkit import reward_function
    from rmkit.serving import running

    rm, path = vlm
    prompts, completions, column, images = grpo_batch()
    expected = offline(rm, images)
    assert trl_call(reward_function(str(path)), prompts, completions, column) == pytest.approx(
        expected, abs=1e-5
    )
    with running(rmkit.serve(rm, max_wait_ms=10)) as base:
        remote = trl_call(reward_function(base), prompts, completions, column)
    assert remote == pytest.approx(expected, abs=1e-5)


def test_the_image_column_alone_goes_before_the_question(vlm):
    """Prompts without image parts (a loop that keeps images in a column): the column's image is shown first."""
    from rmkit import reward_function

    rm, path = vlm
    prompts, completions, column, images = grpo_batch()
    plain = [[{"role": "user", "content": QUESTIONS[k // 2]}] for k in range(len(COMPLETIONS))]
    rewards = trl_call(reward_function(str(path)), plain, completions, column)
    assert rewards == pytest.approx(offline(rm, images), abs=1e-5)
