"""The judge decodes a huge image file at most at 4x the pixels its processor keeps, however `size` is held."""
from psdistill.judge.vlm import VLMJudge
from psdistill.models.tiny import tiny_qwen3_vl


def test_decode_cap_follows_max_pixels_held_as_size_dict_or_plain_dict():
    model, processor = tiny_qwen3_vl(image_size=96)
    # As loaded (SizeDict), on the PIL path here and on the torchvision path alike.
    assert VLMJudge(model, processor, model_id="t")._decode_max_pixels == 4 * 96 * 96
    # As Qwen3-VL's README sets bounds: a plain dict (this fell back to 16.7 Mpx before).
    processor.image_processor.size = {"shortest_edge": 32 * 32, "longest_edge": 128 * 128}
    assert VLMJudge(model, processor, model_id="t")._decode_max_pixels == 4 * 128 * 128
