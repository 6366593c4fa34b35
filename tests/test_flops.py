from alt_core.config import ALTConfig
from alt_core.flops import count_flops


def test_vit_b16_frame_is_35_1_gflops():
    report = count_flops(ALTConfig(backbone="ViT-B-16", adapter="meanpool"), frames=1)
    backbone = next(r for r in report.rows if r.part == "backbone")
    assert abs(backbone.gflops - 35.1) / 35.1 < 0.01, backbone.gflops


def test_parts_views_and_tome_savings():
    cfg = ALTConfig(backbone="alt-tiny", num_queries=4, width=64, heads=2)
    report = count_flops(cfg, frames=4, views=3, num_classes=10, num_entities=50)
    parts = {r.part: r.flops_per_view for r in report.rows}
    assert set(parts) == {"backbone", "tome", "alignment", "adapter", "classifier"}
    assert parts["alignment"] > 0 and parts["adapter"] > 0 and parts["tome"] == 0
    assert report.total_per_view == sum(parts.values())
    table = report.table()
    assert "GMACs/video" in table and "total" in table
    merged = count_flops(ALTConfig(backbone="alt-tiny", num_queries=4, width=64, heads=2, tome_r=8),
                         frames=4, views=3, num_classes=10, num_entities=50)
    merged_parts = {r.part: r.flops_per_view for r in merged.rows}
    assert merged_parts["tome"] > 0
    assert merged_parts["backbone"] < parts["backbone"]
