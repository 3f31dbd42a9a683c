// tinystories._core — thin pybind11 bindings over csrc/run/tinystories.h.
//
// This file translates types, maps ts_status codes to Python exceptions and
// releases the GIL around native loops. Argument policy (defaults, range
// checks, text decoding) lives in python/tinystories/.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tinystories.h"

namespace py = pybind11;

namespace {

// Raised for malformed, truncated or inconsistent files (a ValueError).
PyObject *format_error_type = nullptr;

// The OSError subclass Python itself raises for this errno (the message
// stays the library's).
PyObject *os_error_type(ts_status code, int sys_errno) {
    if (code == TS_ERR_NOT_FOUND || sys_errno == ENOENT) return PyExc_FileNotFoundError;
    switch (sys_errno) {
    case EISDIR: return PyExc_IsADirectoryError;
    case ENOTDIR: return PyExc_NotADirectoryError;
    case EACCES:
    case EPERM: return PyExc_PermissionError;
    default: return PyExc_OSError;
    }
}

[[noreturn]] void raise_status(ts_status code, const ts_error &err) {
    const char *message = err.message[0] ? err.message : ts_status_name(code);
    switch (code) {
    case TS_ERR_NOT_FOUND:
    case TS_ERR_IO:
        PyErr_SetString(os_error_type(code, err.sys_errno), message);
        break;
    case TS_ERR_FORMAT:
        PyErr_SetString(format_error_type, message);
        break;
    case TS_ERR_NOMEM:
        PyErr_SetString(PyExc_MemoryError, message);
        break;
    default:
        PyErr_SetString(PyExc_ValueError, message);
        break;
    }
    throw py::error_already_set();
}

void check(ts_status code, const ts_error &err) {
    if (code != TS_OK) raise_status(code, err);
}

// Shared owners: a session or generation keeps its model/tokenizer alive, so
// dropping a Generator while another thread still generates is safe.
using ModelPtr = std::shared_ptr<ts_model>;
using TokenizerPtr = std::shared_ptr<ts_tokenizer>;

// ts_sampling and ts_generate_options together, built once per request
// from Python's SamplingParams (which checks them first).
struct Options {
    ts_sampling sampling{};
    std::vector<int32_t> stop_tokens;
    ts_generate_options generate{};
    Options(float temperature, float top_p, int top_k, uint64_t seed, float min_p,
            float repetition_penalty, float presence_penalty, float frequency_penalty,
            std::vector<int32_t> stop_token_ids, bool context_shift, int n_keep, bool logprobs,
            int top_logprobs)
        : stop_tokens(std::move(stop_token_ids)) {
        sampling.temperature = temperature;
        sampling.top_p = top_p;
        sampling.top_k = top_k;
        sampling.seed = seed;
        sampling.min_p = min_p;
        sampling.repetition_penalty = repetition_penalty;
        sampling.presence_penalty = presence_penalty;
        sampling.frequency_penalty = frequency_penalty;
        generate.n_stop_tokens = stop_tokens.size();
        generate.context_shift = context_shift;
        generate.n_keep = n_keep;
        generate.logprobs = logprobs;
        generate.top_logprobs = top_logprobs;
    }
    // the stop list's storage moves with the object: point at it when used
    const ts_generate_options *options() {
        static const int32_t no_tokens[1] = {0};
        generate.stop_tokens = stop_tokens.empty() ? no_tokens : stop_tokens.data();
        return &generate;
    }
};

// A sampled token's log-probabilities, copied out of its event (whose arrays
// last until the next step), so that they can be kept without the GIL.
struct LogprobsCopy {
    float logprob = 0.0f;
    std::vector<std::pair<int32_t, float>> top;

    explicit LogprobsCopy(const ts_token_event &e) : logprob(e.logprob) {
        for (int k = 0; k < e.n_top; k++) top.emplace_back(e.top_tokens[k], e.top_logprobs[k]);
    }
    // For Python: (logprob, [(id, logprob), ...]).
    py::object to_python() const {
        py::list ranked;
        for (const auto &[id, value] : top) ranked.append(py::make_tuple(id, value));
        return py::make_tuple(logprob, ranked);
    }
};

// A sampled token's log-probabilities for Python, or None.
py::object token_logprobs(const ts_token_event &e, bool wanted) {
    if (!wanted || e.is_prompt) return py::none();
    return LogprobsCopy(e).to_python();
}

struct Sampler {
    std::unique_ptr<ts_sampler, void (*)(ts_sampler *)> sampler{nullptr, ts_sampler_free};
    std::vector<float> scratch; // the sampler works in place; the caller's logits stay as given
    Sampler(int vocab_size, const Options &options) {
        ts_sampler *raw = nullptr;
        ts_error err{};
        check(ts_sampler_new(vocab_size, &options.sampling, &raw, &err), err);
        sampler.reset(raw);
        scratch.resize(static_cast<size_t>(vocab_size));
    }
    void accept(int32_t token, bool is_prompt) { ts_sampler_accept(sampler.get(), token, is_prompt); }
    int sample(py::array_t<float, py::array::c_style | py::array::forcecast> logits) {
        if (logits.ndim() != 1 || static_cast<size_t>(logits.shape(0)) != scratch.size()) {
            throw py::value_error("logits must be a 1-d array of vocab_size floats");
        }
        std::memcpy(scratch.data(), logits.data(), scratch.size() * sizeof(float));
        py::gil_scoped_release release;
        return ts_sampler_sample(sampler.get(), scratch.data());
    }
};

struct Model {
    ModelPtr model;
    // kernels: "" for automatic; quantize: TS_QUANTIZE_*.
    Model(const std::string &path, const std::string &kernels, int quantize, int group_size,
          int n_threads) {
        ts_model *raw = nullptr;
        ts_error err{};
        ts_status code;
        ts_load_options options = ts_load_options_default();
        options.kernels = kernels.c_str();
        options.quantize = quantize;
        options.group_size = group_size;
        options.n_threads = n_threads;
        {
            py::gil_scoped_release release;
            code = ts_model_load_with(path.c_str(), &options, &raw, &err);
        }
        check(code, err);
        model = ModelPtr(raw, ts_model_free);
    }
    std::string kernels() const { return ts_model_kernels(model.get()); }
    py::dict config() const {
        const ts_config *c = ts_model_config(model.get());
        py::dict d;
        d["dim"] = c->dim;
        d["hidden_dim"] = c->hidden_dim;
        d["n_layers"] = c->n_layers;
        d["n_heads"] = c->n_heads;
        d["n_kv_heads"] = c->n_kv_heads;
        d["vocab_size"] = c->vocab_size;
        d["seq_len"] = c->seq_len;
        d["shared_classifier"] = bool(c->shared_classifier);
        d["version"] = c->version;
        d["group_size"] = c->group_size;
        return d;
    }
};

struct Tokenizer {
    TokenizerPtr tokenizer;
    explicit Tokenizer(const std::string &path) {
        ts_tokenizer *raw = nullptr;
        ts_error err{};
        ts_status code;
        {
            py::gil_scoped_release release;
            code = ts_tokenizer_load(path.c_str(), &raw, &err);
        }
        check(code, err);
        tokenizer = TokenizerPtr(raw, ts_tokenizer_free);
    }
    int vocab_size() const { return ts_tokenizer_vocab_size(tokenizer.get()); }

    py::bytes token(int32_t id) const {
        size_t len = 0;
        const char *piece = ts_tokenizer_token(tokenizer.get(), id, &len);
        if (!piece) throw py::index_error("token id " + std::to_string(id) + " is outside the vocabulary");
        return py::bytes(piece, len);
    }

    std::vector<int32_t> encode(const py::bytes &text, bool bos, bool eos) const {
        std::string_view view = text;
        std::vector<int32_t> ids(ts_tokenizer_max_tokens(view.size()));
        size_t n = 0;
        ts_error err{};
        ts_status code;
        {
            py::gil_scoped_release release;
            code = ts_tokenizer_encode(tokenizer.get(), view.data(), view.size(), bos, eos,
                                       ids.data(), &n, &err);
        }
        check(code, err);
        ids.resize(n);
        return ids;
    }

    // Concatenated pieces as run.c prints them; `skip` ids contribute nothing.
    py::bytes decode(const std::vector<int32_t> &ids, const std::vector<int32_t> &skip) const {
        std::string out;
        int32_t prev = -1;
        for (int32_t id : ids) {
            size_t len = 0;
            const char *piece = ts_tokenizer_decode_piece(tokenizer.get(), prev, id, &len);
            if (!piece) throw py::value_error("token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(vocab_size()));
            bool skipped = false;
            for (int32_t s : skip) skipped |= (s == id);
            if (!skipped) out.append(piece, len);
            prev = id;
        }
        return py::bytes(out);
    }
};

struct Session {
    ModelPtr model;
    std::unique_ptr<ts_session, void (*)(ts_session *)> session{nullptr, ts_session_free};

    Session(const Model &m, int n_threads) : model(m.model) {
        ts_session *raw = nullptr;
        ts_error err{};
        check(ts_session_new(model.get(), n_threads, &raw, &err), err);
        session.reset(raw);
    }

    // Evaluates ids at positions pos..; returns logits [len(ids), vocab] when asked.
    py::object eval(py::array_t<int32_t, py::array::c_style | py::array::forcecast> ids, int pos,
                    bool want_logits) {
        const int vocab = ts_model_config(model.get())->vocab_size;
        const size_t n = static_cast<size_t>(ids.size());
        py::array_t<float> logits;
        float *out = nullptr;
        if (want_logits) {
            logits = py::array_t<float>({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(vocab)});
            out = logits.mutable_data();
        }
        const int32_t *data = ids.data();
        ts_error err{};
        ts_status code;
        {
            py::gil_scoped_release release;
            code = ts_session_eval(session.get(), data, n, pos, out, &err);
        }
        check(code, err);
        if (want_logits) return std::move(logits);
        return py::none();
    }
};

// One run of run.c's generation loop, advanced from Python piece by piece or
// to the end. Owns its session and sampler.
struct Generation {
    ModelPtr model;
    TokenizerPtr tokenizer;
    std::unique_ptr<ts_session, void (*)(ts_session *)> session{nullptr, ts_session_free};
    std::unique_ptr<ts_sampler, void (*)(ts_sampler *)> sampler{nullptr, ts_sampler_free};
    std::unique_ptr<ts_generation, void (*)(ts_generation *)> generation{nullptr, ts_generation_free};
    bool done = false;
    bool logprobs = false;

    Generation(const Model &m, const Tokenizer &t, const std::vector<int32_t> &prompt, int steps,
               Options &options, int n_threads)
        : model(m.model), tokenizer(t.tokenizer), logprobs(options.generate.logprobs) {
        ts_error err{};
        ts_session *raw_session = nullptr;
        check(ts_session_new(model.get(), n_threads, &raw_session, &err), err);
        session.reset(raw_session);
        ts_sampler *raw_sampler = nullptr;
        check(ts_sampler_new(ts_model_config(model.get())->vocab_size, &options.sampling,
                             &raw_sampler, &err),
              err);
        sampler.reset(raw_sampler);
        ts_generation *raw_generation = nullptr;
        check(ts_generation_start(session.get(), tokenizer.get(), sampler.get(), prompt.data(),
                                  prompt.size(), steps, options.options(), &raw_generation, &err),
              err);
        generation.reset(raw_generation);
    }

    // Advances to the next printed token. Returns (token, piece bytes,
    // is_prompt, logprobs), or None when generation has ended.
    py::object next() {
        if (done) return py::none();
        ts_token_event event{};
        ts_error err{};
        ts_status code;
        {
            py::gil_scoped_release release;
            code = ts_generation_next(generation.get(), &event, &err);
        }
        check(code, err);
        if (event.done) {
            done = true;
            return py::none();
        }
        return py::make_tuple(event.token, py::bytes(event.piece, event.len), bool(event.is_prompt),
                              token_logprobs(event, logprobs));
    }

    // Runs to the end; returns the concatenated pieces (prompt pieces only
    // when asked) and the sampled ids. Pending signals (Ctrl-C) are checked
    // every few milliseconds and stop the loop with their exception.
    py::tuple run(bool include_prompt) {
        std::string text;
        std::vector<int32_t> tokens;
        using clock = std::chrono::steady_clock;
        const auto signal_interval = std::chrono::milliseconds(10);
        while (!done) {
            ts_error err{};
            ts_status code = TS_OK;
            {
                py::gil_scoped_release release;
                const auto deadline = clock::now() + signal_interval;
                while (true) {
                    ts_token_event event{};
                    code = ts_generation_next(generation.get(), &event, &err);
                    if (code != TS_OK || event.done) {
                        done = true;
                        break;
                    }
                    if (!event.is_prompt) tokens.push_back(event.token);
                    if (include_prompt || !event.is_prompt) text.append(event.piece, event.len);
                    // The clock every token (tens of ns against a token's >= microseconds):
                    // counting tokens between checks would let a slow model (100 ms per
                    // token) delay Ctrl-C by the whole count.
                    if (clock::now() >= deadline) break;
                }
            }
            check(code, err);
            if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        }
        return py::make_tuple(py::bytes(text), tokens);
    }

    py::dict stats() const {
        ts_generate_stats s = ts_generation_stats(generation.get());
        py::dict d;
        d["n_positions"] = s.n_positions;
        d["n_generated"] = s.n_generated;
        d["n_shifts"] = s.n_shifts;
        d["finish_reason"] = s.finish_reason;
        d["elapsed_s"] = s.elapsed_s;
        return d;
    }
};

// Many generations stepped together (ts_batch_generation_*). Owns its
// native state; run() drives every queued request to the end.
struct BatchGeneration {
    ModelPtr model;
    TokenizerPtr tokenizer;
    std::unique_ptr<ts_batch_generation, void (*)(ts_batch_generation *)> batch{
        nullptr, ts_batch_generation_free};
    int max_batch;
    std::vector<std::string> texts;  // per request: the pieces printed after its prompt
    std::vector<std::vector<int32_t>> ids; // per request: the tokens sampled
    std::vector<int> finish;         // per request: TS_FINISH_*, 0 while running
    std::vector<bool> logprobs;      // per request: whether its events carry them
    long long n_generated = 0;       // tokens printed after the prompts, all requests
    std::atomic<bool> interrupted{false}; // set by interrupt(), read between advance()'s steps

    BatchGeneration(const Model &m, const Tokenizer &t, int max_batch, int n_threads)
        : model(m.model), tokenizer(t.tokenizer), max_batch(max_batch) {
        ts_error err{};
        ts_batch_generation *raw = nullptr;
        check(ts_batch_generation_new(model.get(), tokenizer.get(), max_batch, n_threads, &raw, &err),
              err);
        batch.reset(raw);
    }

    int add(const std::vector<int32_t> &prompt, int steps, Options &options) {
        ts_error err{};
        int id = -1;
        check(ts_batch_generation_add(batch.get(), prompt.data(), prompt.size(), steps,
                                      &options.sampling, options.options(), &id, &err),
              err);
        texts.resize(static_cast<size_t>(id) + 1);
        ids.resize(static_cast<size_t>(id) + 1);
        finish.resize(static_cast<size_t>(id) + 1, 0);
        logprobs.resize(static_cast<size_t>(id) + 1, false);
        logprobs[static_cast<size_t>(id)] = options.generate.logprobs;
        return id;
    }

    void cancel(int id) {
        ts_error err{};
        check(ts_batch_generation_cancel(batch.get(), id, &err), err);
    }

    // Records one event of request e.id (the pieces and ids after its prompt).
    void record(const ts_batch_event &e) {
        const size_t id = static_cast<size_t>(e.id);
        if (e.event.done) {
            finish[id] = e.event.finish_reason;
        } else if (!e.event.is_prompt) {
            texts[id].append(e.event.piece, e.event.len);
            ids[id].push_back(e.event.token);
            n_generated++;
        }
    }

    // One step: the events as (id, token, piece bytes, is_prompt, logprobs,
    // finish_reason); a done event has token -1 and finish_reason > 0.
    py::list step() {
        std::vector<ts_batch_event> events(static_cast<size_t>(max_batch));
        size_t n = 0;
        int active = 0;
        ts_error err{};
        ts_status code;
        {
            py::gil_scoped_release release;
            code = ts_batch_generation_step(batch.get(), events.data(), &n, &active, &err);
        }
        check(code, err);
        py::list out;
        for (size_t i = 0; i < n; i++) {
            const ts_batch_event &e = events[i];
            record(e);
            if (e.event.done) {
                out.append(py::make_tuple(e.id, -1, py::bytes(), false, py::none(),
                                          e.event.finish_reason));
            } else {
                out.append(py::make_tuple(e.id, e.event.token, py::bytes(e.event.piece, e.event.len),
                                          bool(e.event.is_prompt),
                                          token_logprobs(e.event, logprobs[static_cast<size_t>(e.id)]),
                                          0));
            }
        }
        return out;
    }

    // Several steps, as one step() per request: for each request with events,
    // (id, token ids, their pieces' bytes joined, each piece's length, logprobs
    // per token or None, finish_reason: > 0 when it ended in these steps).
    // Returns after max_steps, after max_seconds, after a step in which a request
    // sampled its first token or ended (its slot is free for a queued one), or
    // after the step during which interrupt() was called: a server takes many
    // tokens per call into Python, not one.
    py::list advance(int max_steps, double max_seconds) {
        struct Pending {
            std::vector<int32_t> tokens;
            std::string text;
            std::vector<int> lengths;
            std::vector<LogprobsCopy> logprobs; // only for requests that asked for them
            int finish = 0;
        };
        std::vector<ts_batch_event> events(static_cast<size_t>(max_batch));
        std::map<int, Pending> pending;  // by id: the order requests report in
        ts_error err{};
        ts_status code = TS_OK;
        {
            py::gil_scoped_release release;
            using clock = std::chrono::steady_clock;
            const auto deadline =
                clock::now() + std::chrono::duration_cast<clock::duration>(
                                   std::chrono::duration<double>(max_seconds));
            bool report = false;  // a request started or ended: Python should know now
            for (int step = 0; step < max_steps && !report; step++) {
                size_t n = 0;
                int active = 0;
                code = ts_batch_generation_step(batch.get(), events.data(), &n, &active, &err);
                if (code != TS_OK) break;
                for (size_t i = 0; i < n; i++) {
                    const ts_batch_event &e = events[i];
                    record(e);
                    Pending &p = pending[e.id];
                    if (e.event.done) {
                        p.finish = e.event.finish_reason;
                        report = true;
                    } else {
                        report = report || ids[static_cast<size_t>(e.id)].size() == 1;
                        p.tokens.push_back(e.event.token);
                        p.text.append(e.event.piece, e.event.len);
                        p.lengths.push_back(static_cast<int>(e.event.len));
                        if (logprobs[static_cast<size_t>(e.id)]) p.logprobs.emplace_back(e.event);
                    }
                }
                // an interrupt() that came between two advances ends the next after one step
                if (active == 0 || interrupted.exchange(false) || clock::now() >= deadline) break;
            }
        }
        check(code, err);
        py::list out;
        for (auto &[id, p] : pending) {
            py::object lp = py::none();
            if (logprobs[static_cast<size_t>(id)]) {
                py::list per_token;
                for (const LogprobsCopy &copy : p.logprobs) per_token.append(copy.to_python());
                lp = per_token;
            }
            out.append(py::make_tuple(id, py::cast(p.tokens), py::bytes(p.text), py::cast(p.lengths),
                                      lp, p.finish));
        }
        return out;
    }

    // Makes a running advance() return after its current step (any thread).
    void interrupt() { interrupted.store(true); }

    // Steps until every request is done; returns each request's completion.
    // Pending signals (Ctrl-C) are checked every few milliseconds.
    std::vector<py::bytes> run() {
        std::vector<ts_batch_event> events(static_cast<size_t>(max_batch));
        using clock = std::chrono::steady_clock;
        const auto signal_interval = std::chrono::milliseconds(10);
        int active = 1;
        while (active > 0) {
            ts_error err{};
            ts_status code = TS_OK;
            {
                py::gil_scoped_release release;
                const auto deadline = clock::now() + signal_interval;
                while (active > 0 && clock::now() < deadline) {
                    size_t n = 0;
                    code = ts_batch_generation_step(batch.get(), events.data(), &n, &active, &err);
                    if (code != TS_OK) break;
                    for (size_t i = 0; i < n; i++) record(events[i]);
                }
            }
            check(code, err);
            if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        }
        std::vector<py::bytes> out;
        out.reserve(texts.size());
        for (const std::string &text : texts) out.emplace_back(text);
        return out;
    }
};

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "Native core of tinystories (see python/tinystories for the public API).";
    static py::exception<std::runtime_error> format_error(m, "FormatError", PyExc_ValueError);
    format_error_type = format_error.ptr();
    format_error.doc() = "A malformed, truncated or inconsistent model or tokenizer file (a ValueError).";

    // The numbers Python must agree on with the engine (tinystories.formats.constants).
    m.attr("TOKEN_UNK") = int(TS_TOKEN_UNK);
    m.attr("TOKEN_BOS") = int(TS_TOKEN_BOS);
    m.attr("TOKEN_EOS") = int(TS_TOKEN_EOS);
    m.attr("TOKEN_FIRST_BYTE") = int(TS_TOKEN_FIRST_BYTE);
    m.attr("TOKEN_BYTES") = int(TS_TOKEN_BYTES);
    m.attr("QUANTIZE_NONE") = int(TS_QUANTIZE_NONE);
    m.attr("QUANTIZE_Q8_0") = int(TS_QUANTIZE_Q8_0);

    m.def("kernels_available", [] { return std::string(ts_kernels_available()); },
          "The kernel sets this CPU runs, fastest first, separated by spaces.");

    m.def("default_group_size", &ts_default_group_size, py::arg("dim"),
          "The Q8_0 group size quantizing on load and v2 exports use unless told otherwise "
          "(llama2.c export.py's rule: the largest power of two up to 64 dividing dim).");
    m.def(
        "stream_read_gbps",
        [](size_t bytes, int n_threads, int repeats) {
            py::gil_scoped_release release;
            return ts_stream_read_gbps(bytes, n_threads, repeats);
        },
        py::arg("bytes"), py::arg("n_threads"), py::arg("repeats"),
        "The machine's streaming read bandwidth in GB/s (n_threads threads each summing its "
        "share of `bytes`, the best of `repeats`), or -1 when it cannot be measured.");

    m.attr("FINISH_STOP") = int(TS_FINISH_STOP);
    m.attr("FINISH_LENGTH") = int(TS_FINISH_LENGTH);
    m.attr("FINISH_CANCELLED") = int(TS_FINISH_CANCELLED);
    m.attr("MAX_TOP_LOGPROBS") = int(TS_MAX_TOP_LOGPROBS);
    m.attr("SEED_ZERO_STATE") = py::int_(static_cast<unsigned long long>(TS_SEED_ZERO_STATE));

    py::class_<Options>(m, "Options", "ts_sampling and ts_generate_options for one request.")
        .def(py::init<float, float, int, uint64_t, float, float, float, float, std::vector<int32_t>,
                      bool, int, bool, int>(),
             py::arg("temperature"), py::arg("top_p"), py::arg("top_k"), py::arg("seed"),
             py::arg("min_p"), py::arg("repetition_penalty"), py::arg("presence_penalty"),
             py::arg("frequency_penalty"), py::arg("stop_token_ids"), py::arg("context_shift"),
             py::arg("n_keep"), py::arg("logprobs"), py::arg("top_logprobs"),
             "Checked by the engine when a sampler or generation is made from them.");

    py::class_<Sampler>(m, "Sampler", "run.c's sampler (ts_sampler) on logits given by the caller.")
        .def(py::init<int, const Options &>(), py::arg("vocab_size"), py::arg("options"))
        .def("accept", &Sampler::accept, py::arg("token"), py::arg("is_prompt"),
             "Records a token of the sequence for the penalties.")
        .def("sample", &Sampler::sample, py::arg("logits"),
             "The next token for these logits (a float32 array of vocab_size; not modified).");

    py::class_<Model>(m, "Model", "A loaded model file (v0, v1 or v2), shared by reference count.")
        .def(py::init<const std::string &, const std::string &, int, int, int>(), py::arg("path"),
             py::arg("kernels") = "", py::arg("quantize") = 0, py::arg("group_size") = 0,
             py::arg("n_threads") = 0,
             "Maps and validates `path`; kernels \"\" picks the fastest set, quantize is a "
             "QUANTIZE_* value, group_size 0 the engine's default.")
        .def_property_readonly("config", &Model::config,
                               "The header's dims, shared_classifier, version and group_size.")
        .def_property_readonly("kernels", &Model::kernels, "The kernel set this model runs.");

    py::class_<Tokenizer>(m, "Tokenizer", "A loaded tokenizer.bin vocabulary.")
        .def(py::init<const std::string &>(), py::arg("path"), "Loads and validates `path`.")
        .def_property_readonly("vocab_size", &Tokenizer::vocab_size, "Number of entries.")
        .def("token", &Tokenizer::token, py::arg("id"),
             "The raw vocabulary entry of `id` (IndexError outside the vocabulary).")
        .def("encode", &Tokenizer::encode, py::arg("text"), py::arg("bos"), py::arg("eos"),
             "Token ids of UTF-8 `text`, as run.c encodes it.")
        .def("decode", &Tokenizer::decode, py::arg("ids"), py::arg("skip"),
             "The bytes run.c prints for `ids`; ids in `skip` print nothing.");

    py::class_<Session>(m, "Session", "One KV cache over a model.")
        .def(py::init<const Model &, int>(), py::arg("model"), py::arg("n_threads"),
             "A fresh session; n_threads 0 lets the engine choose.")
        .def("eval", &Session::eval, py::arg("ids"), py::arg("pos"), py::arg("want_logits"),
             "Evaluates `ids` at positions pos..; float32 logits [len(ids), vocab] or None.");

    py::class_<Generation>(m, "Generation", "One run of run.c's generation loop.")
        .def(py::init<const Model &, const Tokenizer &, const std::vector<int32_t> &, int, Options &,
                      int>(),
             py::arg("model"), py::arg("tokenizer"), py::arg("prompt"), py::arg("steps"),
             py::arg("options"), py::arg("n_threads"), "Starts a generation over checked arguments.")
        .def("next", &Generation::next,
             "(token, piece bytes, is_prompt, logprobs) of the next printed token, or None at the "
             "end; logprobs is (logprob, [(id, logprob), ...]) for sampled tokens when asked, "
             "else None.")
        .def("run", &Generation::run, py::arg("include_prompt"),
             "Runs to the end: (printed bytes, sampled ids); Ctrl-C interrupts it.")
        .def_property_readonly("stats", &Generation::stats,
                               "n_positions, n_generated, n_shifts, finish_reason (FINISH_*, 0 "
                               "while running) and elapsed_s so far.");

    py::class_<BatchGeneration>(m, "BatchGeneration", "Many generations stepped together.")
        .def(py::init<const Model &, const Tokenizer &, int, int>(), py::arg("model"),
             py::arg("tokenizer"), py::arg("max_batch"), py::arg("n_threads"),
             "Room for `max_batch` sequences at once.")
        .def("add", &BatchGeneration::add, py::arg("prompt"), py::arg("steps"), py::arg("options"),
             "Queues one request; returns its index.")
        .def("cancel", &BatchGeneration::cancel, py::arg("id"),
             "Ends request `id` at the next step (FINISH_CANCELLED).")
        .def("step", &BatchGeneration::step,
             "One step: [(id, token, piece bytes, is_prompt, logprobs, finish_reason)]; a done "
             "event has token -1 and its finish_reason.")
        .def("advance", &BatchGeneration::advance, py::arg("max_steps"), py::arg("max_seconds"),
             "Up to `max_steps` steps (fewer after `max_seconds`, once a request starts or ends, "
             "or after interrupt()): [(id, token ids, bytes, piece lengths, logprobs per token "
             "or None, finish_reason)], one entry per request with events.")
        .def("interrupt", &BatchGeneration::interrupt,
             "Makes a running advance() return after its current step; safe from any thread.")
        .def("run", &BatchGeneration::run,
             "Steps until every request is done; each request's completion bytes.")
        .def_readonly("token_ids", &BatchGeneration::ids, "Per request: the tokens sampled so far.")
        .def_readonly("finish_reasons", &BatchGeneration::finish,
                      "Per request: FINISH_*, 0 while running.")
        .def_readonly("n_generated", &BatchGeneration::n_generated,
                      "Tokens printed after the prompts, all requests.");
}
