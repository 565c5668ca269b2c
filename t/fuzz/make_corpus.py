#!/usr/bin/env python3
"""Writes the seed corpora of t/fuzz from the unit tests' sample bodies.

usage seeds: byte 0 = config (bit 0: anthropic, bit 1: sse, bits 2-4: mode
0 identity / 1 gzip here / 2 zlib here / 3 raw deflate here / 4 bytes as gzip /
5 bytes as deflate, bits 5-7: level - 1), byte 1 = chunking, then the body.
Run from anywhere: python3 t/fuzz/make_corpus.py
"""
import gzip
import json
import os
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, '..', 'unit', 'data')


def read(path):
    with open(os.path.join(DATA, path), 'rb') as f:
        return f.read()


def write(kind, name, content):
    d = os.path.join(HERE, 'corpus', kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(content)


def config(anthropic, sse, mode, level=6):
    return bytes([(1 if anthropic else 0) | (2 if sse else 0) | (mode << 2) | ((level - 1) << 5)])


def raw_deflate(b):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(b) + c.flush()


bodies = [
    # (name, file, anthropic, sse)
    ('openai_chat_stream', 'streams/openai_chat.sse', False, True),
    ('openai_chat_stream_no_usage', 'streams/openai_chat_no_usage.sse', False, True),
    ('openai_completions_stream', 'streams/openai_completions.sse', False, True),
    ('anthropic_stream', 'streams/anthropic_messages.sse', True, True),
    ('anthropic_tool_use_stream', 'streams/anthropic_tool_use.sse', True, True),
    ('openai_responses_stream', 'streams/openai_responses.sse', False, True),
    ('openai_chat_completion', 'responses/openai_chat_completion.json', False, False),
    ('openai_responses', 'responses/openai_responses.json', False, False),
    ('openai_embeddings', 'responses/openai_embeddings.json', False, False),
    ('openai_error', 'responses/openai_error.json', False, False),
    ('anthropic_message', 'responses/anthropic_message.json', True, False),
]
for name, path, anthropic, sse in bodies:
    body = read(path)
    write('usage', name, config(anthropic, sse, 0) + b'\x07' + body)
    write('usage', name + '.crlf', config(anthropic, sse, 0) + b'\x03' + body.replace(b'\n', b'\r\n'))
    write('usage', name + '.gzip_here', config(anthropic, sse, 1) + b'\x11' + body)
    write('usage', name + '.gzip', config(anthropic, sse, 4) + b'\x05' + gzip.compress(body, mtime=0))
    write('usage', name + '.deflate_zlib', config(anthropic, sse, 5) + b'\x09' + zlib.compress(body))
    write('usage', name + '.deflate_raw', config(anthropic, sse, 5) + b'\x00' + raw_deflate(body))

small = {
    'done_only': (False, True, b'data: [DONE]\n\n'),
    'cr_lines': (False, True, b': c\rdata: {"usage":{"prompt_tokens":1,"completion_tokens":2}}\r\rdata: [DONE]\r\r'),
    'multi_line_data': (True, True, b'event: message_start\ndata: {"type":"message_start",\ndata: "message":{"usage":'
                        b'{"input_tokens":3,"output_tokens":1}}}\n\ndata: {"type":"message_stop"}\n\n'),
    'bom': (False, True, b'\xef\xbb\xbfdata: {"usage":null}\n\ndata: [DONE]\n\n'),
    'anthropic_error': (True, True, b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
                        b'"message":"Overloaded"}}\n\n'),
    'responses_failed': (False, True, b'data: {"type":"response.failed","response":{"usage":{"input_tokens":9,'
                         b'"output_tokens":0,"input_tokens_details":{"cached_tokens":0}}}}\n\n'),
    'json_duplicate_usage': (False, False, b'{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2,'
                             b'"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":1}}}'),
    # bare usage objects: the fuzzer also holds parse_usage_object's one-pass reader to jansson on them
    'usage_object_openai': (False, False, b'{"prompt_tokens":12,"completion_tokens":9,'
                            b'"prompt_tokens_details":{"cached_tokens":4}}'),
    'usage_object_anthropic': (True, False, b'{"input_tokens":30,"cache_creation_input_tokens":5,'
                               b'"cache_read_input_tokens":6,"output_tokens":2}'),
    'usage_object_responses': (False, False, b'{"input_tokens":30,"output_tokens":7,'
                               b'"input_tokens_details":{"cached_tokens":10},"input_tokens_details":null}'),
}
for name, (anthropic, sse, body) in small.items():
    write('usage', name, config(anthropic, sse, 0) + b'\x01' + body)

requests = {
    'chat_stream': {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Hello"}],
                    "max_completion_tokens": 300},
    'chat_stream_include_false': {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": False},
                                  "messages": [{"role": "user", "content": "hi"}]},
    'chat_stream_include_true': {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
                                 "messages": []},
    'chat_stream_options_empty': {"model": "gpt-4o", "stream": True, "stream_options": {}, "n": 2},
    'chat_stream_options_null': {"model": "gpt-4o", "stream": True, "stream_options": None},
    'chat_not_stream': {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
    'completions_stream': {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "stream": True,
                           "best_of": 2, "max_tokens": 7},
    'responses_stream': {"model": "gpt-4.1", "input": "Tell me a story", "stream": True, "max_output_tokens": 500},
    'anthropic_stream': {"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": True,
                         "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]},
    'embeddings': {"model": "text-embedding-3-small", "input": ["The food was delicious", "\u00e9\u0000"]},
}
for name, body in requests.items():
    write('request', name, json.dumps(body, separators=(',', ':')).encode())
write('request', 'pretty', json.dumps(requests['chat_stream_include_false'], indent=2).encode())
write('request', 'duplicates', b'{"model":"m","stream":true,"stream_options":{"include_usage":true},'
      b'"stream_options":{"include_usage":false,"include_usage":null}}')
write('request', 'escaped_keys', b'{"model":"m","str\\u0065am":true,"stream\\u005foptions":{"x":1}}')
