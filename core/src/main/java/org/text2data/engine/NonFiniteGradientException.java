package org.text2data.engine;

/** A gradient (or a kept constraint gradient) of one parameter tensor holds a NaN or an infinity. */
public class NonFiniteGradientException extends ArithmeticException {
    private final int tensorIndex;

    public NonFiniteGradientException(int tensorIndex, String message) {
        super(message);
        this.tensorIndex = tensorIndex;
    }

    /** Index of the offending tensor in the engine's parameter list. */
    public int tensorIndex() {
        return tensorIndex;
    }
}
