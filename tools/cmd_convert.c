/* `tessera convert MODEL --dst DIR [--tp N] [--dtype bf16|f16|f32] [--dequantize]`: an HF directory
 * or a GGUF file -> a workspace split for N ranks (worker/workspace.h), like `lmdeploy convert`; a
 * GGUF's quantized matrices keep their blocks unless --dequantize. */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/status.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "worker/workspace_convert.h"

int tsr_cmd_convert(int argc, char **argv) {
    const char *dst = NULL, *dtype_s = "bf16", *model_format = NULL;
    int64_t tp = 1, group_size = 0;
    bool dequantize = false;
    const tsr_opt opts[] = {
        {"--dst", TSR_OPT_STR, &dst, "DIR", "the workspace directory to write (required)"},
        {"--tp", TSR_OPT_INT, &tp, "N", "tensor-parallel size to split for (default 1)"},
        {"--dtype", TSR_OPT_STR, &dtype_s, "TYPE", "storage type of the 16/32-bit weights: bf16 (default), f16 or f32"},
        {"--model-format", TSR_OPT_STR, &model_format, "F",
         "check the model is F: hf, gguf, awq, gptq or compressed-tensors (LMDeploy's flag; the format is read from the model)"},
        {"--group-size", TSR_OPT_INT, &group_size, "G", "with --model-format awq/gptq/...: check the checkpoint's group size"},
        {"--dequantize", TSR_OPT_FLAG, &dequantize, NULL,
         "store a GGUF's quantized matrices as --dtype too (default: they keep their blocks)"},
        {NULL, 0, NULL, NULL, NULL},
    };
    const char *pos[1];
    int n_pos = 0;
    int rc = tsr_cli_parse("tessera convert [MODEL] --dst DIR [--tp N] [--dtype bf16|f16|f32] [--dequantize]",
                           "Writes a TurboMind-style workspace: config.ini, the tokenizer and chat template, and one "
                           "weight file per rank holding only that rank's share.  MODEL: an HF directory "
                           "(safetensors) or a GGUF file (default: the default model).",
                           opts, argc, argv, pos, 1, &n_pos);
    if (rc == TSR_CLI_HELP) return 0;
    if (rc != TSR_CLI_OK) return 1;
    if (!dst) {
        tsr_cli_err("tessera convert: --dst DIR is required\n");
        return 1;
    }
    tsr_dtype dt;
    if (!strcmp(dtype_s, "f32") || !strcmp(dtype_s, "fp32")) dt = TSR_F32;
    else if (!strcmp(dtype_s, "f16") || !strcmp(dtype_s, "fp16")) dt = TSR_F16;
    else if (!strcmp(dtype_s, "bf16")) dt = TSR_BF16;
    else {
        tsr_cli_err("tessera convert: --dtype must be bf16, f16 or f32 (got '%s')\n", dtype_s);
        return 1;
    }
    if (tp < 1 || tp > 1024) {
        tsr_cli_err("tessera convert: --tp must be between 1 and 1024\n");
        return 1;
    }
    const char *model = tsr_cli_model_or_default(n_pos ? pos[0] : NULL);
    if (!model) return 1;
    if (group_size < 0 || (group_size > 0 && !model_format)) {
        tsr_cli_err("tessera convert: --group-size must be positive and goes with --model-format\n");
        return 1;
    }
    if (model_format && tsr_workspace_check_model_format(model, model_format, group_size) != TSR_OK) {
        tsr_cli_err("tessera convert: %s\n", tsr_last_error());
        return 1;
    }
    double t0 = tsr_now();
    if (tsr_workspace_convert(model, dst, (int)tp, dt, !dequantize) != TSR_OK) {
        tsr_cli_err("tessera convert: %s\n", tsr_last_error());
        return 1;
    }
    fprintf(stderr, "wrote workspace %s (tp %lld, %s) in %.1f s\n", dst, (long long)tp, dtype_s, tsr_now() - t0);
    return 0;
}
