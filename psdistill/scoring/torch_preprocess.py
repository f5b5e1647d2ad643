"""The Qwen-VL processor's image path in torch, so a gradient reaches the pixels: check, resize,
normalise, patch, and the prompt's tokens with one `<|image_pad|>` per merged vision token.

The processor (transformers' Qwen2VLImageProcessorPil, used by Qwen2/2.5/3-VL) resizes a PIL image with
PIL's bicubic filter to the size `smart_resize` picks (sides multiples of patch x merge, area within
[min_pixels, max_pixels]), scales to [0, 1], normalises with its mean and std and cuts the image into
patches, each repeated over the temporal patch. Here the same steps run on a float tensor: at a size
`smart_resize` keeps the result equals the processor's `pixel_values` (tests/test_reward.py); at another
size torch's antialiased bicubic (PIL's kernel, on floats, not on rounded uint8 values) stands in for
PIL's, so pixels differ by a few levels and scores by a little (the README states the measured figure).
"""
from __future__ import annotations

import torch

from psdistill.core.errors import ConfigError, DataError


def check_images(images) -> torch.Tensor:
    """`images` if it is a float tensor (B, 3, H, W) with values in [0, 1]; else DataError, one line."""
    want = "a float tensor (B, 3, H, W) with values in [0, 1] (as diffusers returns with output_type='pt')"
    if not isinstance(images, torch.Tensor):
        raise DataError(f"reward: images must be {want}, got {type(images).__name__}")
    if not images.is_floating_point():
        raise DataError(f"reward: images must be {want}, got dtype {images.dtype} (divide uint8 by 255)")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise DataError(f"reward: images must be {want}, got shape {tuple(images.shape)}")
    if not bool(((images >= 0) & (images <= 1)).all()):  # NaN fails too
        finite = images[images.isfinite()]
        span = f"{float(finite.min()):.4g} to {float(finite.max()):.4g}" if finite.numel() else "no finite value"
        nan = ", with NaN or inf" if finite.numel() < images.numel() else ""
        raise DataError(f"reward: images must be {want}, got values from {span}{nan} "
                        "(map [-1, 1] outputs with (x + 1) / 2)")
    return images


class QwenVLPixels:
    """Model inputs for images (B, 3, H, W) in [0, 1] and one rendered prompt `text`: `pixel_values` and
    `image_grid_thw` as the processor makes them, and the prompt's token ids (every image of a batch has
    the same size, so every row is the same and none is padded)."""

    def __init__(self, processor, text: str):
        ip = processor.image_processor
        if not all(hasattr(ip, k) for k in ("patch_size", "merge_size", "temporal_patch_size")):
            raise ConfigError(f"reward: {type(ip).__name__} is not a Qwen-VL image processor (patch, merge, "
                              "temporal patch sizes); the torch path reproduces only that one")
        self.processor, self.text = processor, text
        self.patch, self.merge, self.temporal = ip.patch_size, ip.merge_size, ip.temporal_patch_size
        self.min_pixels, self.max_pixels = ip.size.shortest_edge, ip.size.longest_edge
        self.mean = torch.tensor(ip.image_mean, dtype=torch.float64).view(1, 3, 1, 1)
        self.std = torch.tensor(ip.image_std, dtype=torch.float64).view(1, 3, 1, 1)
        self._tokens: dict[tuple[int, int], dict] = {}  # (grid h, grid w) -> token inputs of one row

    def size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) the processor resizes an image of this size to."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        return smart_resize(height, width, factor=self.patch * self.merge, min_pixels=self.min_pixels,
                            max_pixels=self.max_pixels)

    def __call__(self, images: torch.Tensor, device=None) -> dict:
        x = check_images(images).to(device)
        height, width = self.size(*x.shape[-2:])
        if (height, width) != tuple(x.shape[-2:]):
            # torch's antialiased bicubic uses PIL's kernel (a = -0.5); clamp as PIL's uint8 output is.
            x = torch.nn.functional.interpolate(x, size=(height, width), mode="bicubic", antialias=True,
                                                align_corners=False).clamp(0, 1)
        x = (x - self.mean.to(x)) / self.std.to(x)
        pixel_values, grid_h, grid_w = self.patchify(x)
        rows = len(x)
        tokens = self._token_inputs(grid_h, grid_w)
        out = {k: v.to(x.device).expand(rows, -1) for k, v in tokens.items()}
        out["pixel_values"] = pixel_values
        out["image_grid_thw"] = torch.tensor([[1, grid_h, grid_w]] * rows, device=x.device)
        return out

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(B * grid_h * grid_w, C * temporal * patch * patch) patches in the processor's order: merge
        windows row by row, the patches of a window row by row, each (channel, time, y, x)."""
        b, c, h, w = x.shape
        p, m = self.patch, self.merge
        gh, gw = h // p, w // p
        x = x.reshape(b, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
        x = x.unsqueeze(6).expand(*x.shape[:6], self.temporal, p, p)  # one image: the same frame twice
        return x.reshape(b * gh * gw, c * self.temporal * p * p), gh, gw

    def _token_inputs(self, grid_h: int, grid_w: int) -> dict:
        if (grid_h, grid_w) not in self._tokens:
            proc = self.processor
            grid = torch.tensor([[1, grid_h, grid_w]])
            # The processor's own placeholder expansion: one <|image_pad|> per merged vision token.
            texts, _ = proc.get_text_with_replacements([self.text], [proc.replace_image_token({"image_grid_thw": grid}, 0)])
            ids = proc.tokenizer(texts, return_tensors="pt")
            self._tokens[grid_h, grid_w] = {
                "input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"],
                "mm_token_type_ids": torch.tensor(proc.create_mm_token_type_ids(ids["input_ids"]))}
        return self._tokens[grid_h, grid_w]
