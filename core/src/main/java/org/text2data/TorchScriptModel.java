package org.text2data;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.IValue;
import org.bytedeco.pytorch.IValueVector;
import org.bytedeco.pytorch.JitModule;
import org.bytedeco.pytorch.NamedTensor;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.named_attribute_iterator;
import org.bytedeco.pytorch.named_attribute_list;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.named_parameter_iterator;
import org.bytedeco.pytorch.named_parameter_list;

/**
 * A TorchScript module trained in Python ({@code torch.jit.script(model).save(path)}) with
 * {@code forward(data, cond: Optional[Tensor])}; a Java {@code null} condition becomes TorchScript
 * {@code None}. Its parameters are the module's own tensors: optimizing them trains the module, and
 * {@link #save} writes a file that Python's {@code torch.jit.load} reads.
 */
public final class TorchScriptModel implements ConditionalModel, AutoCloseable {

    private final JitModule module;
    private final Path source;
    private final Map<String, Tensor> params;
    private boolean closed;

    private TorchScriptModel(JitModule module, Path source) {
        this.module = module;
        this.source = source;
        this.params = collect(module);
    }

    /**
     * Loads a module saved by {@code torch.jit.save} and puts it in training mode; the file's problems are named
     * in the exception.
     *
     * @param file the saved TorchScript module
     * @return the loaded model, which the caller closes
     * @throws IllegalArgumentException if the file is missing or unreadable, is not a TorchScript module, is
     *                                  truncated or corrupt (a tensor's record shorter than declared), its code nests
     *                                  too deep for libtorch's parser, or the module has no parameters
     */
    public static TorchScriptModel load(Path file) {
        LibTorch.ensureLoaded();
        InputFile.checkReadable(file, "model file");
        ArchiveCheck.check(file, "model file");
        JitModule m;
        try {
            m = torch.load(file.toString());
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("model file " + file + " is not a TorchScript module saved by "
                    + "torch.jit.save / torch.jit.script(...).save: " + ErrorMessages.of(e), e);
        }
        m.train(true);
        TorchScriptModel model = new TorchScriptModel(m, file);
        if (model.params.isEmpty()) {
            model.close();
            throw new IllegalArgumentException("model file " + file + " has no parameters to finetune");
        }
        return model;
    }

    /**
     * Calls the module's {@code forward(data, cond)}, passing {@code None} for a null condition.
     *
     * @param data       the input batch
     * @param condOrNull the conditions, or null for an unconditional pass
     * @return the module's output, with its own tensor handle
     * @throws IllegalArgumentException if the forward call fails (the message gives the inputs' shapes and the
     *                                  cause) or does not return a tensor
     * @throws IllegalStateException    if this model is closed
     */
    @Override
    public Tensor forward(Tensor data, Tensor condOrNull) {
        checkOpen();
        IValueVector inputs = new IValueVector(new IValue(data), condOrNull == null ? new IValue() : new IValue(condOrNull));
        IValue out;
        try {
            out = module.forward(inputs);
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("model forward(data, " + (condOrNull == null ? "None" : "cond")
                    + ") failed for data " + Tensors.describe(data)
                    + (condOrNull == null ? "" : " and cond " + Tensors.describe(condOrNull)) + ": "
                    + ErrorMessages.of(e), e);
        } finally {
            inputs.close();
        }
        if (!out.isTensor()) {
            throw new IllegalArgumentException("model forward returned " + out.tagKind().getString() + ", not a Tensor");
        }
        return new Tensor(out.toTensor()); // own handle, independent of the IValue
    }

    /**
     * The module's parameters by their state-dict names, in order (live tensors, not copies).
     *
     * @return the parameters by name; this model's own map, refreshed by {@link #to}
     * @throws IllegalStateException if this model is closed
     */
    public Map<String, Tensor> namedParameters() {
        checkOpen();
        return params;
    }

    /**
     * The module's parameters, in order.
     *
     * @return a new list of the live parameter tensors
     * @throws IllegalStateException if this model is closed
     */
    public List<Tensor> parameters() {
        return new ArrayList<>(namedParameters().values());
    }

    /**
     * The file this module was loaded from.
     *
     * @return the path given to {@link #load}
     */
    public Path source() {
        return source;
    }

    /**
     * Switches the module between training and evaluation mode (as Python's {@code module.train(on)}).
     *
     * @param on true for training mode, false for evaluation mode
     * @throws IllegalStateException if this model is closed
     */
    public void train(boolean on) {
        checkOpen();
        module.train(on);
    }

    /**
     * Moves the module to a device and re-reads its parameters, so that {@link #namedParameters()} returns the
     * moved tensors.
     *
     * @param device a libtorch device string: {@code "cpu"}, {@code "cuda"}, {@code "cuda:1"}
     * @throws IllegalStateException if this model is closed
     */
    public void to(String device) {
        checkOpen();
        try (Device d = new Device(device)) {
            module.to(d);
        }
        params.clear();
        params.putAll(collect(module));
    }

    /**
     * Writes the module (with its current parameters) to {@code file}, atomically: a temporary file in
     * the same folder, then a rename, so a reader never sees a half-written file.
     *
     * @param file where to write the module
     * @throws IOException           if the file cannot be written (see {@link AtomicFile#write}) or libtorch fails
     *                               to save the module
     * @throws IllegalStateException if this model is closed
     */
    public void save(Path file) throws IOException {
        checkOpen();
        long need = savedBytesBound();
        // libtorch names the archive's top folder after the file it writes: a file with the target's own name (in a
        // temporary folder beside it) makes the same module give the same bytes
        AtomicFile.writeNamed(file, named -> {
            // libtorch's writer cannot fail cleanly: when the disk fills, its zip writer throws again while
            // unwinding and the process aborts. So a save that may not fit is refused before it starts.
            requireSpace(named.toAbsolutePath().getParent(), need);
            try {
                module.save(named.toString());
            } catch (RuntimeException e) {
                throw new IOException(ErrorMessages.of(e), e); // AtomicFile names the file
            }
        });
    }

    /**
     * Checks, before long work, that {@link #save} could write {@code file} now: the folder can take a file, and has
     * the free space a save of this module may need. Nothing on disk changes.
     *
     * @param file where the module is to be saved
     * @throws IOException saying why not
     * @throws IllegalStateException if this model is closed
     */
    public void checkSaveFits(Path file) throws IOException {
        checkOpen();
        Path dir = AtomicFile.checkWritable(file);
        try {
            requireSpace(dir, savedBytesBound());
        } catch (IOException e) {
            throw new IOException("cannot write " + file + ": " + e.getMessage(), e);
        }
    }

    private static void requireSpace(Path dir, long need) throws IOException {
        long free = usableSpace.applyAsLong(dir);
        if (free < need) {
            throw new IOException("not enough free space: saving the module needs up to " + mib(need)
                    + " (its tensors, and 8 MiB for its code), and " + mib(free) + " are free there");
        }
    }

    /** The usable bytes of a folder's file system (a test fakes a full disk). */
    static java.util.function.ToLongFunction<Path> usableSpace = dir -> {
        try {
            return java.nio.file.Files.getFileStore(dir).getUsableSpace();
        } catch (IOException e) {
            return Long.MAX_VALUE; // unknown: the write itself will say what is wrong
        }
    };

    /**
     * An upper bound of the saved file's size: the whole storages of the module's tensors (parameters, buffers and
     * tensor attributes, through its submodules; a view saves its whole storage), a zip entry with its alignment
     * per tensor, and room for the code and its debug tables; and never below the size of the file the module was
     * loaded from, which held all of it (constants included).
     */
    private long savedBytesBound() {
        long bytes = 0;
        try (org.bytedeco.javacpp.PointerScope scope = new org.bytedeco.javacpp.PointerScope()) {
            named_attribute_list attributes = module.named_attributes(true);
            named_attribute_iterator end = attributes.end();
            for (named_attribute_iterator it = attributes.begin(); it.notEquals(end); it.increment()) {
                IValue v = it.access().value();
                if (v.isTensor()) {
                    Tensor t = v.toTensor();
                    bytes += (t.defined() && t.has_storage() ? t.storage().nbytes() : 0) + 1024;
                }
            }
        }
        long loaded = 0;
        try {
            loaded = source == null ? 0 : java.nio.file.Files.size(source);
        } catch (IOException | RuntimeException gone) {
            // the file is gone: the tensors' bound stands
        }
        return Math.max(bytes, loaded) + (8L << 20);
    }

    private static String mib(long bytes) {
        return String.format(java.util.Locale.ROOT, "%.1f MiB", bytes / 1048576.0);
    }

    /**
     * The underlying libtorch module.
     *
     * @return the module, owned by this model
     * @throws IllegalStateException if this model is closed
     */
    public JitModule module() {
        checkOpen();
        return module;
    }

    /** Releases the native module; further calls do nothing. */
    @Override
    public void close() {
        if (!closed) {
            closed = true;
            module.close();
        }
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("this TorchScriptModel is closed");
        }
    }

    private static Map<String, Tensor> collect(JitModule m) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        named_parameter_list list = m.named_parameters(true);
        named_parameter_iterator end = list.end();
        for (named_parameter_iterator it = list.begin(); it.notEquals(end); it.increment()) {
            NamedTensor nt = it.access();
            // own handle: the entry (and the tensor reference in it) dies with the iterator
            out.put(nt.name().getString(), new Tensor(nt.value()));
        }
        return out;
    }

    /** {@link ErrorMessages#clean}: one line naming the cause, without libtorch's C++ stack trace. */
    static String firstLine(String message) {
        return ErrorMessages.clean(message);
    }
}
