"""Report generators of the encoder × decoder study: vocabulary, beam search, every encoder × decoder, strict loading."""

from __future__ import annotations

import itertools

import pytest
import torch

from cxr_irgen.errors import UserError
from cxr_irgen.report_models.beam_search import BeamSettings, beam_search
from cxr_irgen.report_models.vocabulary import BOS, EOS, PAD, UNK, Vocabulary

ENCODERS = ("dve-tiny", "fve-tiny", "cve-tiny", "ccve-tiny")
DECODERS = ("transformer-tiny", "m2-tiny", "cnn_rnn_rnn-tiny")
TEXTS = [
    "The heart is enlarged. There is a left pleural effusion.",
    "The lungs are clear. No pneumothorax.",
    "There is pulmonary edema. The heart is enlarged.",
    "No pleural effusion. The lungs are clear.",
]


def test_vocabulary_lower_cases_counts_cuts_and_round_trips(tmp_path):
    vocab = Vocabulary.build(TEXTS * 2 + ["Rare word."], min_count=2, max_words=5)
    assert vocab.tokens[:4] == ["<pad>", "<bos>", "<unk>", "<eos>"]
    assert "rare" not in vocab.index and "heart" in vocab.index and "The" not in vocab.index
    ids = vocab.encode(["The HEART is enlarged rare . more words", "No."])
    assert ids.shape == (2, 7) and ids[0, 0] == BOS and ids[0, -1] == EOS and ids[1, -1] == PAD
    assert ids[0, 5] == UNK  # "rare" is below min_count; the sixth word and on are cut
    assert vocab.decode(ids[0].tolist()) == "the heart is enlarged <unk>"
    vocab.save(tmp_path)
    again = Vocabulary.load(tmp_path)
    assert again.tokens == vocab.tokens and again.max_words == 5 and again.sentence_end == vocab.index["."]


def _table_step(table: torch.Tensor):
    """A 'model' whose next-word log-probs depend only on the last word: table (V, V) of probabilities."""

    def step(tokens, state):
        return table[tokens[:, -1]].log(), state

    return step


def test_beam_search_finds_the_better_sequence_than_greedy_and_stops_at_eos():
    # words: 4 = "a", 5 = "b". Greedy takes "a" (0.6) then a flat 0.3 to eos; "b" (0.4) leads to eos with 0.99.
    v = 6
    table = torch.full((v, v), 1e-6)
    table[BOS, 4], table[BOS, 5] = 0.6, 0.4
    table[4, EOS], table[4, 4], table[4, 5] = 0.3, 0.36, 0.34
    table[5, EOS] = 0.99
    table[:, 4:] += 1e-6
    table = table / table.sum(1, keepdim=True)
    greedy = beam_search(_table_step(table), None, 2, BeamSettings(beam_size=1, max_length=2), "cpu")
    beam = beam_search(_table_step(table), None, 2, BeamSettings(beam_size=3, max_length=6), "cpu")
    assert greedy == [[4, 4], [4, 4]]
    assert beam == [[5], [5]]


def test_beam_search_length_penalty_and_trigram_blocking_change_the_result():
    v = 7
    table = torch.full((v, v), 1e-4)
    table[BOS, 4] = 1.0
    table[4, 5] = 1.0
    table[5, 4], table[5, EOS] = 0.7, 0.3  # "a b a b ..." loops; ending early costs 0.3
    table = table / table.sum(1, keepdim=True)
    plain = beam_search(_table_step(table), None, 1, BeamSettings(beam_size=2, max_length=12), "cpu")[0]
    blocked = beam_search(_table_step(table), None, 1, BeamSettings(beam_size=2, max_length=12, block_trigrams=True), "cpu")[0]
    longer = beam_search(_table_step(table), None, 1, BeamSettings(beam_size=2, max_length=12, length_penalty=2.0), "cpu")[0]
    assert plain == [4, 5]  # the raw sum prefers the shortest
    assert len(longer) > len(plain)  # a length penalty > 0 favours longer hypotheses
    trigrams = [tuple(blocked[i : i + 3]) for i in range(len(blocked) - 2)]
    assert len(trigrams) == len(set(trigrams)) and blocked[:2] == [4, 5]


def test_beam_search_reorders_the_state_with_the_kept_beams():
    # the state counts the "a" (4) of each hypothesis's prefix; random scores make the kept beams swap rows
    generator = torch.Generator().manual_seed(0)
    checked = []

    def step(tokens, count):
        assert torch.equal(count, (tokens[:, :-1] == 4).sum(1)), "state rows no longer follow their hypotheses"
        checked.append(len(tokens))
        logp = torch.log_softmax(torch.randn(len(tokens), 7, generator=generator) * 3, dim=-1)
        logp[:, EOS] = -30.0
        return logp, count + (tokens[:, -1] == 4).long()

    beam_search(step, torch.zeros(3, dtype=torch.long), 3, BeamSettings(beam_size=4, max_length=10), "cpu")
    assert len(checked) == 10 and checked[0] == 12


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.build(TEXTS, min_count=1, max_words=32)


@pytest.mark.parametrize("encoder,decoder", list(itertools.product(ENCODERS, DECODERS)))
def test_every_encoder_and_decoder_trains_and_its_loss_drops(encoder, decoder, vocab):
    from cxr_irgen.report_models.model import build_report_model

    torch.manual_seed(0)
    model = build_report_model(encoder, decoder, vocab)
    assert model.projection.linear.in_features == model.encoder.width  # derived, not configured
    batch = {"pixel_values": torch.rand(4, 1, 64, 64), "targets": vocab.encode(TEXTS)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.encoder.parameters()]
    assert all(not p.requires_grad for p in frozen) == model.encoder.frozen
    optimizer = torch.optim.Adam(trainable, lr=3e-3)
    model.train()
    losses = []
    for _ in range(4):
        loss = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses


def test_generator_saves_and_loads_strictly_and_rejects_a_mismatch_in_one_line(vocab, tmp_path):
    from safetensors.torch import load_file, save_file

    from cxr_irgen.report_models.factory import load_report_generator
    from cxr_irgen.report_models.model import EncoderDecoderGenerator, build_report_model

    torch.manual_seed(0)
    generator = EncoderDecoderGenerator(build_report_model("fve-tiny", "m2-tiny", vocab), vocab, {"num_beams": 2, "max_length": 10})
    generator.save_pretrained(tmp_path / "run" / "report_model")
    loaded = load_report_generator(tmp_path / "run")
    images = torch.rand(3, 1, 64, 64)
    assert loaded(images, batch_size=2) == generator(images, batch_size=2)
    assert loaded.settings().beam_size == 2

    weights = load_file(str(tmp_path / "run" / "report_model" / "model.safetensors"))
    weights["decoder.extra_weight"] = weights.pop("decoder.out.bias")
    save_file(weights, str(tmp_path / "run" / "report_model" / "model.safetensors"))
    with pytest.raises(UserError) as err:
        load_report_generator(tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and "decoder.out.bias" in message and "decoder.extra_weight" in message


def test_encoder_checkpoint_with_a_wrong_shape_is_rejected(tmp_path):
    from safetensors.torch import save_file

    from cxr_irgen.report_models.encoders import build_report_encoder

    encoder = build_report_encoder("dve-tiny")
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = torch.zeros(1, 1, 1, 1)
    save_file(state, str(tmp_path / "enc.safetensors"))
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        build_report_encoder("dve-tiny", checkpoint=str(tmp_path / "enc.safetensors"))
    with pytest.raises(UserError, match="use one of"):
        build_report_encoder("densenet-huge")


def test_sampling_is_refused_by_beam_models(vocab):
    from cxr_irgen.report_models.model import EncoderDecoderGenerator, build_report_model

    generator = EncoderDecoderGenerator(build_report_model("fve-tiny", "transformer-tiny", vocab), vocab)
    with pytest.raises(UserError, match="do_sample"):
        generator(torch.rand(1, 1, 64, 64), do_sample=True)
    with pytest.raises(UserError, match="grayscale"):
        generator(torch.rand(1, 3, 64, 64))
