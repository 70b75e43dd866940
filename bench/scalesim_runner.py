"""Run SCALE-Sim on a list of conv layers and print their compute cycles as JSON (runs in SCALE-Sim's own venv).

SCALE-Sim 3.0.0 needs numpy < 2, so ``bench/scalesim_compare.py`` runs this file with the
interpreter of ``.cache/scalesim-venv``. Input (a JSON file): ``{"rows", "cols",
"dataflow", "layers": [{"name", "ifmap_h", "ifmap_w", "filt_h", "filt_w", "channels",
"num_filters", "stride"}]}`` with the padded input size. Output (stdout, last line): a
JSON list of ``{"name", "cycles", "utilization"}`` from SCALE-Sim's COMPUTE_REPORT.csv.
"""

import contextlib
import csv
import io
import json
import pathlib
import sys
import tempfile


def main(spec_path):
    from scalesim.scale_sim import scalesim

    spec = json.loads(pathlib.Path(spec_path).read_text())
    with tempfile.TemporaryDirectory(prefix="accel-scalesim-") as tmp:
        tmp = pathlib.Path(tmp)
        config = tmp / "accel.cfg"
        config.write_text(f"""[general]
run_name = accel

[architecture_presets]
ArrayHeight:    {spec['rows']}
ArrayWidth:     {spec['cols']}
IfmapSramSzkB:  1024
FilterSramSzkB: 1024
OfmapSramSzkB:  1024
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : 10
Dataflow : {spec['dataflow']}
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
""")
        topology = tmp / "topology.csv"
        rows = ["Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,"]
        for layer in spec["layers"]:
            rows.append(f"{layer['name']}, {layer['ifmap_h']}, {layer['ifmap_w']}, {layer['filt_h']}, "
                        f"{layer['filt_w']}, {layer['channels']}, {layer['num_filters']}, {layer['stride']},")
        topology.write_text("\n".join(rows) + "\n")
        layout = tmp / "layout.csv"
        layout.write_text("Layer name, IFMAP SRAM Row Ordering, IFMAP SRAM Col Ordering,\n")
        sim = scalesim(save_disk_space=True, verbose=False, config=str(config), topology=str(topology),
                       layout=str(layout), input_type_gemm=False)
        with contextlib.redirect_stdout(io.StringIO()):
            sim.run_scale(top_path=str(tmp / "out"))
        report = next((tmp / "out").rglob("COMPUTE_REPORT.csv"))
        with open(report) as f:
            records = [dict((k.strip(), v.strip()) for k, v in row.items() if k) for row in csv.DictReader(f)]
    results = [{"name": layer["name"], "cycles": int(float(rec["Total Cycles"])),
                "utilization": float(rec["Compute Util %"]) / 100}
               for layer, rec in zip(spec["layers"], records)]
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
