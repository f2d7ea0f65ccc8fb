# Reference renderer for the chat-template interpreter tests: Jinja2 configured as transformers'
# apply_chat_template does (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
# tojson = json.dumps(ensure_ascii=False), raise_exception, strftime_now).
# Usage: python3 jinja_oracle.py TEMPLATE_FILE|- '{"messages": [...], ...}'  -> JSON-encoded output
import json, sys
from datetime import datetime
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.ext import loopcontrols
def raise_exception(m): raise jinja2.exceptions.TemplateError(m)
def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
def strftime_now(f): return datetime.now().strftime(f)
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters['tojson']=tojson
env.globals['raise_exception']=raise_exception
env.globals['strftime_now']=strftime_now
def render(src, **kw):
    return env.from_string(src).render(**kw)
if __name__ == '__main__':
    src = open(sys.argv[1]).read() if sys.argv[1] != '-' else sys.stdin.read()
    kw = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    kw.setdefault('tools', None); kw.setdefault('documents', None)
    try:
        print(json.dumps(render(src, **kw), ensure_ascii=False))
    except Exception as e:
        print("ERROR", type(e).__name__, e)
