"""The evidence page: gathering a quantized model's evidence, the HTML report and model card."""
