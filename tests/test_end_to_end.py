"""Train a tiny model, export it, serve it from the stand-in Hub, load it by
repo id in the torch-free package and predict a seed sentence it was trained on."""
import json
import subprocess
import sys

from test_inference_torch_free import BLOCKER

SCRIPT = BLOCKER + """
import json, sys
from rasd import Extractor
ex = Extractor.from_pretrained(sys.argv[1], revision=sys.argv[2])
print(json.dumps(ex.extract(sys.argv[3]).to_dict(), ensure_ascii=False))
"""


def test_train_export_hub_predict(exported_model, mini_docs, hub, tmp_path):
    sha = hub.add_repo("rasd/tiny-e2e", exported_model)
    # a seed sentence (shared/seeds/000) the tiny model was trained on
    gold = next(d for d in mini_docs if d.id == "mini-02")
    script = tmp_path / "e2e.py"
    script.write_text(SCRIPT, encoding="utf-8")
    out = subprocess.run([sys.executable, str(script), "rasd/tiny-e2e", sha, gold.text], capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    pred = json.loads(out.stdout.strip().splitlines()[-1])
    assert hub.total_requests() > 0  # it really came over HTTP
    spans = [(e["start"], e["end"], e["label"]) for e in pred["entities"]]
    assert spans == [(e.start, e.end, e.label) for e in gold.entities]
    by_id = {e["id"]: (e["start"], e["end"]) for e in pred["entities"]}
    gold_by_id = {e.id: (e.start, e.end) for e in gold.entities}
    rels = {(by_id[r["head"]], by_id[r["tail"]], r["label"]) for r in pred["relations"]}
    assert rels == {(gold_by_id[r.head], gold_by_id[r.tail], r.label) for r in gold.relations}
