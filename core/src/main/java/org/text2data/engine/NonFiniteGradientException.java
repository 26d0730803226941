package org.text2data.engine;

/** A gradient (or a kept constraint gradient) of one parameter tensor holds a NaN or an infinity. */
public class NonFiniteGradientException extends ArithmeticException {
    /** Index of the offending tensor in the engine's parameter list. */
    private final int tensorIndex;

    /**
     * Creates the exception.
     *
     * @param tensorIndex index of the offending tensor in the engine's parameter list
     * @param message what is not finite, e.g. {@code "its gradient holds a NaN or an infinity"}
     */
    public NonFiniteGradientException(int tensorIndex, String message) {
        super(message);
        this.tensorIndex = tensorIndex;
    }

    /**
     * Index of the offending tensor in the engine's parameter list.
     *
     * @return the tensor's index, 0-based
     */
    public int tensorIndex() {
        return tensorIndex;
    }
}
