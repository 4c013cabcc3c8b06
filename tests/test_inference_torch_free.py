"""The inference package runs with torch, transformers and the training side unimportable."""
import json
import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent("""
    import sys
    class _Block:
        BLOCKED = ("torch", "transformers", "rasd_train", "datasets", "accelerate", "seqeval")
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, _Block())
""")

SCRIPT = BLOCKER + textwrap.dedent("""
    import json, sys, threading
    import rasd
    from rasd import Extractor
    from rasd.cli import main
    ex = Extractor.from_pretrained(sys.argv[1])
    text = "انسحبت القوات الأمريكية من قاعدة التنف وسلّمتها إلى الحكومة السورية بعد غارات جوية في محافظة دير الزور."
    doc = ex.extract(text)
    # thread safety: one extractor shared by threads gives the same answers
    results = [None] * 4
    def work(i):
        results[i] = ex.extract_batch([text] * 3, batch_size=2)[1].to_dict()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    [t.start() for t in threads]; [t.join() for t in threads]
    assert all(r == doc.to_dict() | {"id": "1"} for r in results), results
    try:
        import torch
        raise SystemExit("torch imported")
    except ImportError:
        pass
    assert not any(m.split(".")[0] in ("torch", "transformers", "rasd_train") for m in sys.modules)
    print(json.dumps(doc.to_dict(), ensure_ascii=False))
""")


def test_inference_runs_without_torch(exported_model, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT, encoding="utf-8")
    out = subprocess.run([sys.executable, str(script), exported_model], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    labels = {(doc["text"][e["start"]:e["end"]], e["label"]) for e in doc["entities"]}
    assert ("قاعدة التنف", "BASE") in labels


def test_cli_training_commands_say_what_to_install(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(BLOCKER + "from rasd.cli import main\nraise SystemExit(main(['train', 'x.yaml']))\n",
                      encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "pip install 'rasd[train]'" in out.stderr
