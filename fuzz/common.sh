# Shared by smoke.sh and long_run.sh (sourced): sanitizer options and the token dictionary of each target.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# The token dictionary of a target (fuzz/dict/<kind>.dict).
dict_of() {
  case $1 in
    chat_template) echo jinja ;;
    run_config) echo yaml ;;
    tiktoken) echo tiktoken ;;
    image) echo image ;;
    *) echo json ;;
  esac
}
