package org.text2data.cli;

import java.io.PrintWriter;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/** {@code ./text2data SUBCOMMAND}: Text2Data's constrained finetuning from the command line. */
@Command(name = "text2data", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
        description = "Text2Data's constrained finetuning on libtorch, for the JVM.",
        subcommands = {DemoCommand.class, FinetuneCommand.class, EstimateGCommand.class, ConformanceCommand.class,
                CommandLine.HelpCommand.class})
public final class Main implements Runnable {

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    public static void main(String[] args) {
        System.exit(run(args));
    }

    /** Runs the command line and returns the exit code (0 success, 1 failure, 2 bad usage). */
    public static int run(String... args) {
        CommandLine cl = new CommandLine(new Main());
        cl.setExecutionExceptionHandler((ex, commandLine, parseResult) -> {
            PrintWriter err = commandLine.getErr();
            boolean badInput = ex instanceof IllegalArgumentException || ex instanceof java.io.IOException
                    || ex instanceof IllegalStateException || ex instanceof ArithmeticException;
            err.println("error: " + (ex.getMessage() == null ? ex.toString() : ex.getMessage()));
            if (!badInput || Boolean.getBoolean("text2data.debug")) {
                ex.printStackTrace(err);
            }
            err.flush();
            return 1;
        });
        return cl.execute(args);
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
