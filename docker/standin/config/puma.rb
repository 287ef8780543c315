# Stand-in Mastodon: `bundle exec puma -C config/puma.rb` runs standin/webserver.py. Like Mastodon's
# config/puma.rb it honours (from the process environment) BIND (default 127.0.0.1) and PORT (3000), and
# (from .env.production too) MAX_THREADS (5) and WEB_CONCURRENCY (2), with preload_app! semantics: SIGUSR1
# is a hot restart, never a phased one.
threads_count = ENV.fetch('MAX_THREADS') { 5 }.to_i
threads threads_count, threads_count
bind "tcp://#{ENV.fetch('BIND', '127.0.0.1')}:#{ENV.fetch('PORT', 3000)}"
workers ENV.fetch('WEB_CONCURRENCY') { 2 }
preload_app!
