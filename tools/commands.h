/* Subcommand entry points; main.c dispatches `tessera SUB ...` to tsr_cmd_SUB(argc, argv)
 * with argv[0] == "SUB".  Each returns the process exit code. */
#ifndef TSR_COMMANDS_H
#define TSR_COMMANDS_H

int tsr_cmd_env(int argc, char **argv);
int tsr_cmd_convert(int argc, char **argv);
int tsr_cmd_tokenize(int argc, char **argv);
int tsr_cmd_inspect(int argc, char **argv);
int tsr_cmd_logits(int argc, char **argv);
int tsr_cmd_generate(int argc, char **argv);
int tsr_cmd_chat(int argc, char **argv);
int tsr_cmd_bench(int argc, char **argv);
int tsr_cmd_serve(int argc, char **argv);
int tsr_cmd_client(int argc, char **argv);
int tsr_cmd_eval(int argc, char **argv);
int tsr_cmd_lite(int argc, char **argv);
/* `tessera lite calibrate` / `lite kv_qparams` (tools/cmd_lite_kv.c), argv[0] the tool */
int tsr_lite_calibrate(int argc, char **argv);
int tsr_lite_kv_qparams(int argc, char **argv);
/* `tessera bench SUB` rows (dispatched by the table in tools/cmd_bench.c) */
int tsr_bench_tokenizer(int argc, char **argv);
int tsr_bench_generate(int argc, char **argv);
int tsr_bench_serve(int argc, char **argv);

#endif
