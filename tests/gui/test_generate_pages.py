"""A generate run in the app, on a tiny decoder: the Data page asks for the placeholders' values and offers the
task; the Method page says that the linear probe does not apply; the Train page shows the answers to the validation
prompts at each evaluation; the Results page is a chat box whose answers stream in (the streamed text is the final
answer), keeps the conversation, shows the base model's answer beside the tuned one, stops when asked, and leaves
the window responsive."""

from __future__ import annotations

import pytest
from gui_helpers import train
from tiny_models import build_tiny_model

from jrft_desktop.core.config import DataSpec, MethodSpec, ModelSpec, RunConfig, TrainingSpec
from jrft_desktop.core.events import EvalEvent, FinishedEvent
from jrft_desktop.core.train.loop import Trainer
from jrft_desktop.gui.chat import BASE, TUNED
from jrft_desktop.gui.lag_probe import LagProbe

FILL = {"name": "Ada", "author": "Lab"}


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    return build_tiny_model("llama", tmp_path_factory.mktemp("gen-gui") / "llama")


@pytest.fixture()
def identity(shared_data):
    return shared_data / "instruct" / "identity.json"


@pytest.fixture(scope="module")
def generate_run(decoder, shared_data, tmp_path_factory):
    """A tiny slash run on identity.json (placeholders filled), trained with the core's Trainer."""
    source = shared_data / "instruct" / "identity.json"
    run_dir = tmp_path_factory.mktemp("gen-run") / "run"
    config = RunConfig(model=ModelSpec(name_or_path=str(decoder)),
                       data=DataSpec(train=str(source), max_length=96, fill=tuple(f"{k}={v}" for k, v in FILL.items())),
                       method=MethodSpec(name="slash"),
                       training=TrainingSpec(max_steps=6, batch_size=4, eval_every=3, device="cpu"))
    assert Trainer(config, run_dir).run().status == "completed"
    return run_dir


def _fill_identity(qtbot, page, identity):
    page.set_train(str(identity))
    qtbot.waitUntil(lambda: page.preview is not None and not page.busy, timeout=30_000)
    for name, value in FILL.items():
        page.set_fill(name, value)
    qtbot.waitUntil(lambda: page.summary is not None and not page.busy, timeout=30_000)


def _choose_generate_run(qtbot, window, decoder, identity, steps: int = 6, eval_every: int = 3):
    """The tiny decoder, identity.json with its placeholders filled, and a short slash run, as a user chooses them."""
    window.model_page.choose_folder(str(decoder))
    _fill_identity(qtbot, window.data_page, identity)
    qtbot.waitUntil(lambda: window.model_page.info is not None and window.method_page.ready, timeout=60_000)
    page = window.method_page
    page.choose("slash", 32, pooling="auto")
    settings = page.training
    settings.set_steps(steps)
    settings.batch_spin.setValue(4)
    settings.max_length_spin.setValue(96)
    settings.eval_spin.setValue(eval_every)
    settings.device_combo.setCurrentIndex(settings.device_combo.findData("cpu"))
    qtbot.waitUntil(lambda: page.plan is not None and not page.busy, timeout=30_000)


def test_data_page_asks_for_the_placeholders(qtbot, window, identity):
    page = window.data_page
    qtbot.waitUntil(lambda: page.task_combo.findData("generate") >= 0, timeout=60_000)  # the tasks of the registry
    page.set_train(str(identity))
    qtbot.waitUntil(lambda: page.preview is not None and not page.busy, timeout=30_000)
    assert page.preview.task == "generate" and list(page.fill_edits) == ["name", "author"]
    assert not page.fill_box.isHidden()
    assert page.summary is None and "{{name}}, {{author}}" in page.error  # one clear message until they are given
    for name, value in FILL.items():
        page.set_fill(name, value)
    qtbot.waitUntil(lambda: page.summary is not None and not page.busy, timeout=30_000)
    spec = page.data_spec()
    assert spec.fill == ("name=Ada", "author=Lab") and spec.text_column is None  # the core reads the layout itself
    assert page.summary.description == "Generation: learn from instructions and answers"
    assert page.summary.train_rows + page.summary.validation_rows == 91 and page.distribution.isHidden()
    page.choose_task("classify")  # the task can be chosen: read as classification, the file has other columns
    qtbot.waitUntil(lambda: page.preview is not None and not page.busy, timeout=30_000)
    assert page.preview.task == "classify" and page.fill_box.isHidden()


def test_method_page_says_the_linear_probe_does_not_apply(qtbot, window, decoder, identity):
    _choose_generate_run(qtbot, window, decoder, identity)
    page = window.method_page
    assert "frozen" in page.count_detail.text()  # the language-model head is the model's own
    page.choose("head")
    qtbot.waitUntil(lambda: not page.busy and bool(page.plan_error), timeout=30_000)
    assert "linear probe" in page.plan_error and page.plan_note.kind == "error"
    window.train_page.refresh_plan()
    assert not window.train_page.start_button.isEnabled() and "linear probe" in window.train_page.plan_label.text()


def test_train_page_shows_the_answers_at_each_evaluation(qtbot, window, decoder, identity):
    _choose_generate_run(qtbot, window, decoder, identity)
    seen = []  # (step, whether the samples view was hidden) at each evaluation, as it arrives

    def watch(event):
        if isinstance(event, EvalEvent):
            seen.append((event.step, window.train_page.samples_box.isHidden()))

    window.train_page.running_changed.connect(
        lambda running: running and window.train_page.run.event.connect(watch))
    result = train(qtbot, window)
    assert isinstance(result, FinishedEvent) and result.status == "completed"
    assert seen == [(3, False), (6, False)]  # shown live, at each evaluation
    view = window.train_page.samples
    assert [step for step, _ in view.evaluations] == [3, 6] and len(view.evaluations[0][1]) == 3
    assert not window.train_page.samples_box.isHidden() and view.evaluations[0][1][0]["prompt"] in view.toPlainText()


def test_results_page_chats_streams_and_compares(qtbot, window, generate_run):
    page = window.results_page
    window.open_results(str(generate_run))
    qtbot.waitUntil(lambda: page.chat.trained is not None, timeout=60_000)
    assert not page.chat_box.isHidden() and page.try_box.isHidden() and page.confusion_box.isHidden()
    assert page.tabs.isTabVisible(page.samples_tab) and len(page.samples.evaluations) == 2
    chat = page.chat
    chat.max_tokens_spin.setValue(24)
    calls = []
    answer = chat.trained.answer

    def recording(turns, *args, **kwargs):
        calls.append((tuple(turns), kwargs.get("base", False)))
        return answer(turns, *args, **kwargs)

    chat.trained.answer = recording
    chat.compare_check.setChecked(True)
    probe = LagProbe()
    probe.start()
    chat.send("Who are you?")
    assert chat.busy and not chat.send_button.isEnabled() and chat.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not chat.busy, timeout=120_000)
    probe.stop()
    first = chat.exchanges[0]
    assert set(first.answers) == {TUNED, BASE}
    for side in (TUNED, BASE):
        assert first.streamed[side] == first.answers[side].text and first.answers[side].text  # streamed = final
        assert first.bubbles[side].text() == first.answers[side].text
    assert probe.ticks > 0 and probe.smooth(100, 300)  # the window kept answering while the models generated
    chat.compare_check.setChecked(False)
    chat.send("And who made you?")
    qtbot.waitUntil(lambda: not chat.busy, timeout=120_000)
    assert set(chat.exchanges[1].answers) == {TUNED}
    tuned = [turns for turns, base in calls if not base]
    assert tuned[1] == (("user", "Who are you?"), ("assistant", first.answers[TUNED].text),
                        ("user", "And who made you?"))  # the conversation so far goes with the new question
    assert [turns for turns, base in calls if base] == [(("user", "Who are you?"),)]
    assert len(chat.turns) == 4
    # greedy answers repeat: the same question in a new chat gets the same answer
    chat.clear()
    chat.send("Who are you?")
    qtbot.waitUntil(lambda: not chat.busy, timeout=120_000)
    assert chat.exchanges[0].answers[TUNED].text == first.answers[TUNED].text


def test_stop_ends_an_answer_with_the_text_so_far(qtbot, window, generate_run):
    page = window.results_page
    window.open_results(str(generate_run))
    qtbot.waitUntil(lambda: page.chat.trained is not None, timeout=60_000)
    chat = page.chat
    chat.max_tokens_spin.setValue(chat.max_tokens_spin.maximum())
    chat.temperature_spin.setValue(1.0)  # sampling: a tiny random model rarely stops by itself
    assert chat.top_p_spin.isEnabled()
    chat.send("Tell me a long story.")
    qtbot.waitUntil(lambda: len(chat.exchanges[0].streamed[TUNED]) > 0, timeout=60_000)
    chat.stop_button.click()
    qtbot.waitUntil(lambda: not chat.busy, timeout=60_000)
    stopped = chat.exchanges[0].answers[TUNED]
    assert stopped.stopped and stopped.text == chat.exchanges[0].streamed[TUNED]
    assert chat.turns[-1] == ("assistant", stopped.text) and "Stopped" in chat.status.text()
    # opening a run while an answer streams starts a new chat: the old answer stops and is dropped
    chat.send("Another long story, please.")
    qtbot.waitUntil(lambda: len(chat.exchanges[-1].streamed[TUNED]) > 0, timeout=60_000)
    window.open_results(str(generate_run))
    assert chat.exchanges == [] and not chat.busy
    qtbot.waitUntil(lambda: chat.trained is not None and not page.busy, timeout=60_000)
    assert chat.exchanges == [] and chat.turns == [] and chat.send_button.isEnabled()
