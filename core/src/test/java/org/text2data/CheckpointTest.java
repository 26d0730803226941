package org.text2data;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.text2data.CheckpointAssert.assertParametersAre;
import static org.text2data.CheckpointAssert.assertSameState;
import static org.text2data.CheckpointAssert.snapshot;
import static org.text2data.CheckpointAssert.state;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.zip.ZipFile;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Constraint checkpoints: a round trip restores everything bit for bit; a bad file is refused and changes nothing. */
class CheckpointTest {
    private static final double G = 1.241462456078726;

    private static void steps(Constraint opt, TorchScriptModel m, Batch b, int n) {
        for (int i = 0; i < n; i++) {
            Text2Data.runStep(opt, G, m, b.cond(), b.data(), b.label(), Loss.MSE).close();
        }
    }

    static List<OptimizerSpec> everyOptimizer() {
        return List.of(OptimizerSpec.sgd(0.01).momentum(0.9), OptimizerSpec.adam(0.01).amsgrad(true),
                OptimizerSpec.adamw(0.01), OptimizerSpec.rmsprop(0.01).momentum(0.5).centered(true),
                OptimizerSpec.adagrad(0.05));
    }

    /**
     * TorchScript's graph executor re-optimizes a module after its first runs, which changes the last bits of its
     * gradients: a freshly loaded module computes its first steps differently from one that has run. Off, as the
     * finetune command runs it, every step computes the same way.
     */
    @Test
    void aRoundTripRestoresEverythingIntoAFreshConstraint(@TempDir Path tmp) throws IOException {
        boolean optimize = torch.getGraphExecutorOptimize();
        torch.setGraphExecutorOptimize(false);
        try {
            roundTrips(tmp);
        } finally {
            torch.setGraphExecutorOptimize(optimize);
        }
    }

    private static void roundTrips(Path tmp) throws IOException {
        for (OptimizerSpec spec : everyOptimizer()) {
            for (Engine engine : List.of(Engine.PLAIN, Engine.AUTO)) {
                String what = spec + " on " + engine;
                Path ck = tmp.resolve(spec.type() + "-" + engine + ".t2d");
                try (TorchScriptModel a = TestModels.model(); TorchScriptModel b = TestModels.model();
                     Batch batch = TestModels.batch();
                     Constraint optA = new Constraint(a.namedParameters(), spec, 0.5, 2.0, engine);
                     Constraint optB = new Constraint(b.namedParameters(), spec, 1.0, 1.0, engine)) {
                    steps(optA, a, batch, 3);
                    optA.setLr(0.004);
                    optA.setCheckFinite(false);
                    optA.saveCheckpoint(ck);
                    optB.loadCheckpoint(ck);
                    assertParametersAre(optB, snapshot(optA), what);
                    try (Checkpoint.OptimizerState sa = state(optA); Checkpoint.OptimizerState sb = state(optB)) {
                        assertThat(sa.perParam()).as(what).anyMatch(s -> s != null && !s.tensors().isEmpty());
                        assertSameState(sa.perParam(), sb.perParam(), what);
                    }
                    assertThat(optB.lr()).isEqualTo(0.004);
                    assertThat(optB.alpha()).isEqualTo(0.5);
                    assertThat(optB.beta()).isEqualTo(2.0);
                    assertThat(optB.checkFinite()).isFalse();
                    // and both go on the same way
                    steps(optA, a, batch, 2);
                    steps(optB, b, batch, 2);
                    assertParametersAre(optB, snapshot(optA), what + ", two steps later");
                    try (Checkpoint.OptimizerState sa = state(optA); Checkpoint.OptimizerState sb = state(optB)) {
                        assertSameState(sa.perParam(), sb.perParam(), what + ", two steps later");
                    }
                }
            }
        }
    }

    /** What a refused load must leave as it was. */
    private record Live(List<Tensor> params, Checkpoint.OptimizerState state, double lr, double alpha, double beta) {
        static Live of(Constraint opt) {
            return new Live(snapshot(opt), CheckpointAssert.state(opt), opt.lr(), opt.alpha(), opt.beta());
        }

        void assertUnchanged(Constraint opt, String what) {
            assertParametersAre(opt, params, what);
            try (Checkpoint.OptimizerState now = CheckpointAssert.state(opt)) {
                assertSameState(state.perParam(), now.perParam(), what);
            }
            assertThat(opt.lr()).as(what).isEqualTo(lr);
            assertThat(opt.alpha()).as(what).isEqualTo(alpha);
            assertThat(opt.beta()).as(what).isEqualTo(beta);
        }
    }

    @Test
    void aDamagedOrTruncatedCheckpointIsRefusedAndChangesNothing(@TempDir Path tmp) throws IOException {
        Path good = tmp.resolve("good.t2d");
        try (TorchScriptModel m = TestModels.model(); Batch batch = TestModels.batch();
             Constraint opt = new Constraint(m.namedParameters(), OptimizerSpec.adam(0.01))) {
            steps(opt, m, batch, 3);
            opt.saveCheckpoint(good);
            List<Tensor> atThree = snapshot(opt);
            steps(opt, m, batch, 2); // the live state now differs from the file's
            opt.setLr(0.003);
            opt.setAlpha(0.25);
            Live before = Live.of(opt);
            byte[] bytes = Files.readAllBytes(good);
            Map<String, byte[]> entries = Zips.read(good);

            Map<String, String> bad = new LinkedHashMap<>(); // file -> what the message must say
            bad.put(write(tmp, "half.t2d", Arrays.copyOf(bytes, bytes.length / 2)), "truncated or damaged");
            bad.put(write(tmp, "one-short.t2d", Arrays.copyOf(bytes, bytes.length - 1)), "truncated or damaged");
            bad.put(write(tmp, "empty.t2d", new byte[0]), "truncated or damaged");
            bad.put(write(tmp, "text.t2d", "not a checkpoint\n".getBytes(StandardCharsets.UTF_8)), "not a readable zip");
            bad.put(write(tmp, "header-flip.t2d", flip(bytes, indexOf(bytes, "text2data-checkpoint", 1) + 3)),
                    "entry header.json does not match its CRC");
            bad.put(write(tmp, "model-flip.t2d", flip(bytes, indexOf(bytes, "model.pt", 2) + 300)),
                    "entry model.pt does not match its CRC");
            bad.put(write(tmp, "optimizer-flip.t2d", flip(bytes, indexOf(bytes, "optimizer.pt", 2) + 2000)),
                    "entry optimizer.pt does not match its CRC");
            Map<String, byte[]> tampered = new LinkedHashMap<>(entries); // a valid zip whose content was changed
            tampered.put("model.pt", flip(entries.get("model.pt"), 200));
            bad.put(zip(tmp, "tampered.t2d", tampered), "entry model.pt does not match its checksum");
            Map<String, byte[]> headless = new LinkedHashMap<>(entries);
            headless.remove("header.json");
            bad.put(zip(tmp, "headless.t2d", headless), "has no header.json");
            Map<String, byte[]> newer = new LinkedHashMap<>(entries);
            newer.put("header.json", new String(entries.get("header.json"), StandardCharsets.UTF_8)
                    .replace("\"version\":1", "\"version\":99").getBytes(StandardCharsets.UTF_8));
            bad.put(zip(tmp, "newer.t2d", newer), "has format version 99");
            bad.put(tmp.resolve("missing.t2d").toString(), "checkpoint file not found");

            for (Map.Entry<String, String> e : bad.entrySet()) {
                assertThatThrownBy(() -> opt.loadCheckpoint(Path.of(e.getKey())))
                        .as(e.getKey()).isInstanceOf(IllegalArgumentException.class)
                        .hasMessageContaining(e.getValue()).hasMessageContaining(Path.of(e.getKey()).toString());
                before.assertUnchanged(opt, e.getKey());
            }
            opt.loadCheckpoint(good); // the good one still loads
            assertParametersAre(opt, atThree, "after loading the good checkpoint");
            before.state().close();
        }
    }

    @Test
    void aCheckpointOfAnotherModelOrOptimizerIsRefusedWithWhatDiffers(@TempDir Path tmp) throws IOException {
        Path f32 = tmp.resolve("f32.t2d");
        Path sgd = tmp.resolve("sgd.t2d");
        Path betas = tmp.resolve("betas.t2d");
        Path fresh = tmp.resolve("fresh.t2d");
        try (TorchScriptModel m32 = TorchScriptModel.load(TestModels.fixture("adam-f32.model.pt"));
             Constraint o32 = new Constraint(m32.namedParameters(), OptimizerSpec.adam(0.01));
             TorchScriptModel other = TestModels.model();
             Constraint oSgd = new Constraint(other.namedParameters(), OptimizerSpec.sgd(0.01).momentum(0.9));
             Constraint oBetas = new Constraint(other.namedParameters(), OptimizerSpec.adam(0.01).betas(0.8, 0.99));
             Constraint oFresh = new Constraint(other.namedParameters(), OptimizerSpec.adam(0.01))) {
            o32.saveCheckpoint(f32);
            oSgd.saveCheckpoint(sgd);
            oBetas.saveCheckpoint(betas);
            oFresh.saveCheckpoint(fresh);
        }
        try (TorchScriptModel m = TestModels.model(); Batch batch = TestModels.batch();
             Constraint opt = new Constraint(m.namedParameters(), OptimizerSpec.adam(0.01))) {
            steps(opt, m, batch, 2);
            Live before = Live.of(opt);
            Map<Path, List<String>> cases = new LinkedHashMap<>();
            cases.put(f32, List.of("does not fit", "parameter 'cin.weight' is float32[16, 3] in the checkpoint, "
                    + "float64[8, 3] in the model"));
            cases.put(sgd, List.of("the checkpoint's optimizer is sgd, this one is adam"));
            cases.put(betas, List.of("optimizer option 'betas' is [0.8,0.99] in the checkpoint, [0.9,0.999] here"));
            cases.put(fresh, List.of("the optimizer has state for parameter 'null' and the checkpoint has none"));
            for (Map.Entry<Path, List<String>> c : cases.entrySet()) {
                var thrown = assertThatThrownBy(() -> opt.loadCheckpoint(c.getKey())).as(c.getKey().toString())
                        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("nothing was restored");
                for (String s : c.getValue()) {
                    thrown.hasMessageContaining(s);
                }
                before.assertUnchanged(opt, c.getKey().toString());
            }
            before.state().close();
        }
    }

    @Test
    void pythonReadsTheModelPartAsAStateDict(@TempDir Path tmp) throws Exception {
        Assumptions.assumeTrue(pythonWithTorch(), "needs /usr/bin/python3 with torch (CI installs python3-torch)");
        Path ck = tmp.resolve("ck.t2d");
        Path saved = tmp.resolve("finetuned.pt");
        try (TorchScriptModel m = TestModels.model(); Batch batch = TestModels.batch();
             Constraint opt = new Constraint(m.namedParameters(), OptimizerSpec.adam(0.01))) {
            steps(opt, m, batch, 3);
            opt.saveCheckpoint(ck);
            m.save(saved);
        }
        String script = String.join("\n",
                "import io, json, sys, zipfile, torch",
                "z = zipfile.ZipFile(sys.argv[1])",
                "header = json.loads(z.read('header.json'))",
                "sd = torch.load(io.BytesIO(z.read('model.pt')))",
                "opt = torch.load(io.BytesIO(z.read('optimizer.pt')))",
                "m = torch.jit.load(sys.argv[2])",
                "model = torch.jit.load(sys.argv[3])",
                "model.load_state_dict(sd)",
                "same = all(torch.equal(p, dict(m.named_parameters())[n]) for n, p in model.named_parameters())",
                "steps = {s['parameter']: s['ints']['step'] for s in header['optimizer']['state']}",
                "print('same', same, 'keys', sorted(sd) == sorted(n for n, _ in m.named_parameters()),",
                "      'moments', tuple(opt['cin.weight/exp_avg'].shape), 'step', steps['cin.weight'])");
        Path py = Files.writeString(tmp.resolve("read.py"), script);
        Process p = new ProcessBuilder("/usr/bin/python3", py.toString(), ck.toString(), saved.toString(),
                TestModels.fixture("adam-f64.model.pt").toAbsolutePath().toString()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(2, TimeUnit.MINUTES)).isTrue();
        assertThat(p.exitValue()).as(out).isZero();
        assertThat(out).contains("same True keys True moments (8, 3) step 3");
    }

    static boolean pythonWithTorch() {
        try {
            Process p = new ProcessBuilder("/usr/bin/python3", "-c", "import torch").redirectErrorStream(true).start();
            p.getInputStream().readAllBytes();
            return p.waitFor(2, TimeUnit.MINUTES) && p.exitValue() == 0;
        } catch (IOException | InterruptedException e) {
            return false;
        }
    }

    private static String write(Path dir, String name, byte[] bytes) throws IOException {
        return Files.write(dir.resolve(name), bytes).toString();
    }

    private static byte[] flip(byte[] bytes, int at) {
        byte[] out = bytes.clone();
        out[at] ^= 0x5A;
        return out;
    }

    /** Where the {@code nth} occurrence of {@code s} starts (the second of an entry's name: its local header). */
    private static int indexOf(byte[] bytes, String s, int nth) {
        byte[] n = s.getBytes(StandardCharsets.UTF_8);
        int seen = 0;
        outer:
        for (int i = 0; i + n.length <= bytes.length; i++) {
            for (int j = 0; j < n.length; j++) {
                if (bytes[i + j] != n[j]) {
                    continue outer;
                }
            }
            if (++seen == nth) {
                return i;
            }
        }
        throw new AssertionError(s + " not found");
    }

    private static String zip(Path dir, String name, Map<String, byte[]> entries) throws IOException {
        return Zips.write(dir.resolve(name), entries, false).toString();
    }
}
