package org.text2data.cli;

import java.io.PrintWriter;

import picocli.CommandLine;
import org.text2data.ErrorMessages;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** {@code ./text2data SUBCOMMAND}: Text2Data's constrained finetuning from the command line. */
@Command(name = "text2data", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
        description = "Text2Data's constrained finetuning on libtorch, for the JVM.",
        subcommands = {DemoCommand.class, FinetuneCommand.class, EstimateGCommand.class, ConformanceCommand.class,
                CommandLine.HelpCommand.class})
public final class Main implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    /** Accepted before or after the subcommand's name; read from the parse result by the error handler. */
    @Option(names = "--verbose", scope = CommandLine.ScopeType.INHERIT,
            description = "on an error, print the full message and stack trace (libtorch's C++ frames included)")
    boolean verbose;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    /** Runs the command line and exits with its code. */
    public static void main(String[] args) {
        System.exit(run(args));
    }

    /**
     * Runs the command line and returns the exit code (0 success, 1 failure, 2 bad usage). A failure prints one
     * line, {@code error: <cause>} (libtorch's C++ stack trace and TorchScript traceback left out); with
     * {@code --verbose} the full message and stack trace follow.
     */
    public static int run(String... args) {
        CommandLine cl = new CommandLine(new Main());
        cl.registerConverter(java.nio.file.Path.class, Main::path);
        cl.setExecutionExceptionHandler((ex, commandLine, parseResult) -> {
            PrintWriter err = commandLine.getErr();
            boolean badInput = ex instanceof IllegalArgumentException || ex instanceof java.io.IOException
                    || ex instanceof IllegalStateException || ex instanceof ArithmeticException
                    || ex.getClass() == RuntimeException.class; // what libtorch throws: bad data or model
            boolean verbose = verbose(parseResult) || Boolean.getBoolean("text2data.debug");
            String message = ErrorMessages.of(ex);
            if (!badInput) {
                message = "internal error: " + ex.getClass().getName() + ": " + message;
            }
            err.println("error: " + message);
            if (verbose) {
                ex.printStackTrace(err);
            } else if (!badInput) {
                err.println("(run with --verbose for the full stack trace)");
            }
            err.flush();
            return 1;
        });
        try {
            return cl.execute(args);
        } catch (OutOfMemoryError e) {
            cl.getErr().println("error: out of Java heap memory (" + ErrorMessages.of(e) + "); give the JVM more with "
                    + "JAVA_TOOL_OPTIONS=-Xmx<size>, or use a smaller data set");
            cl.getErr().flush();
            return 1;
        }
    }

    /**
     * A path from the command line; one the system's file-name encoding cannot hold (a non-ASCII name under the
     * POSIX/C locale) is refused with the way out.
     */
    static java.nio.file.Path path(String s) {
        try {
            return java.nio.file.Path.of(s);
        } catch (java.nio.file.InvalidPathException e) {
            String charset = System.getProperty("sun.jnu.encoding", "?");
            boolean nonAscii = s.chars().anyMatch(c -> c > 127);
            throw new CommandLine.TypeConversionException("'" + s + "' is not a usable path: " + e.getReason()
                    + (nonAscii || !charset.toUpperCase(java.util.Locale.ROOT).contains("UTF")
                    ? " (file names are read in the locale's character set, " + charset + ", which cannot hold "
                    + "non-ASCII names: run under a UTF-8 locale, e.g. LANG=C.UTF-8)" : ""));
        }
    }

    private static boolean verbose(CommandLine.ParseResult pr) {
        for (CommandLine.ParseResult r = pr; r != null; r = r.subcommand()) {
            if (r.hasMatchedOption("--verbose")) {
                return true;
            }
        }
        return false;
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            String v = Main.class.getPackage().getImplementationVersion();
            return new String[] {"text2data " + (v == null ? "(development build)" : v)
                    + " on libtorch 2.10 (bytedeco pytorch 2.10.0-1.5.13), Java " + Runtime.version()};
        }
    }
}
